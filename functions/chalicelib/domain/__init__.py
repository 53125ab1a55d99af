"""Domain layer: models, rules and errors. No HTTP, no AWS, no SQL."""

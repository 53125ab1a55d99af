"""The Step Functions tasks of the analytics refresh: start a Prefect deployment run, report its state."""

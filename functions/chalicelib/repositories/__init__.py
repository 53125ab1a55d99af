"""Data access: parameterised SQL over the ``medical_app`` schema. No HTTP, no business rules."""

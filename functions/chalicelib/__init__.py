"""Medical records service: everything the Chalice app imports lives in this package."""

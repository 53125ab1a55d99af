"""The load test and soak of the API (bench/load_test.py is the command)."""

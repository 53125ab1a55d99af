"""The analytics pipeline: Sling replication, incremental refresh SQL and the Prefect flow."""

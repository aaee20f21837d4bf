-- Runs once on a fresh Postgres volume (docker-entrypoint-initdb.d): the MLflow backend store
-- lives next to Dagster's storage, owned by the same user (POSTGRES_USER).
CREATE DATABASE mlflow;

"""LLM evaluation library: suites, datasets, candidates, generation, scorers,
ranking, caching and the MLflow registry logic. No Airflow import here."""

__version__ = "0.1.0"

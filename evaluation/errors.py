"""Error taxonomy. The DAG maps PermanentError to an immediate task failure
(no retries) and lets everything else go through Airflow's retry policy."""


class LLMOpsError(Exception):
    """Base class for errors raised by the library."""


class PermanentError(LLMOpsError):
    """Retrying cannot help: bad configuration or bad data."""


class SuiteError(PermanentError):
    """The suite file is missing or invalid."""


class DatasetError(PermanentError):
    """The evaluation dataset failed validation."""


class RegistryError(PermanentError):
    """The model registry is not in a state the requested operation allows."""


class TransientError(LLMOpsError):
    """May succeed on retry (engine down, network error, timeout)."""


class EndpointNotReady(TransientError):
    """An inference endpoint did not become ready before its deadline."""


class EngineUnavailable(TransientError):
    """The engine stopped answering in the middle of a generation."""

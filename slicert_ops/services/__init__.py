"""Local services: SeaweedFS (S3 object store) and the MLflow tracking server.

    from slicert_ops.services import ServicesConfig, up, down, status, env_lines
"""

from slicert_ops.services.config import ServicesConfig
from slicert_ops.services.manager import (
    MLFLOW,
    S3,
    client_env,
    down,
    env_lines,
    kill,
    status,
    up,
)

__all__ = ["MLFLOW", "S3", "ServicesConfig", "client_env", "down", "env_lines", "kill",
           "status", "up"]

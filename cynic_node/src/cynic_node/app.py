"""The ASGI entry point: `uvicorn cynic_node.app:app`, configured from the environment."""

from cynic_node.api import create_app
from cynic_node.config import Settings
from cynic_node.logs import setup_logging

setup_logging()
app = create_app(Settings.from_env())

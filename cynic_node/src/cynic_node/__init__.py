"""CYNIC node: the judgment service deployed by the cynic.cluster Ansible collection."""

__version__ = "1.0.0"

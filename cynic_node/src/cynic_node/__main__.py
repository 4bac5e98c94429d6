"""`python -m cynic_node`, the same as the `cynic-node` command."""

from cynic_node.cli import main

main()

"""Agent Vault infrastructure: the CDK app (app.py), its stacks, constructs and gates."""

"""Infrastructure tests: the CDK app synthesized once, security properties asserted."""

"""Reusable pieces of the stacks, one construct per file."""

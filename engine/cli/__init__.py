"""Click commands of the `gravity` CLI: each parses, calls one service function and renders.
Nothing here holds rules; errors are raised as engine types and mapped to exit codes in main.
"""

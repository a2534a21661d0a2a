"""The imperative shell of the local control plane: the supervisor that starts and stops replica processes, probing, the controller loop that applies plans, the SQLite state store, the endpoint registry and the job runner.
"""

"""The imperative shell of the local control plane: the supervisor that starts and stops replica processes, probing, the controller loop that applies plans, the SQLite state store, the endpoint registry, each service's code digest, the ports the app listens on (and who holds a taken one) and the job runner.
"""

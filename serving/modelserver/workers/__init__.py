"""``--num_workers=N``: N worker processes behind one control plane.

    control_plane.py  the parent process: flags, config files, version polling, aspired state,
                      labels, reload; drives every worker to the same state (fleet.py)
    fleet.py          spawning, supervising and restarting the worker processes
    worker.py         one worker: REST + gRPC listeners on the shared ports (SO_REUSEPORT), its
                      own copies of the loaded versions and its own batching queues
    replica.py        the worker's view of the model state (a passive ModelManager)
    wire.py           the length-prefixed JSON messages between control plane and workers
    ports.py          flag checks and the "port already held" start-up check
"""

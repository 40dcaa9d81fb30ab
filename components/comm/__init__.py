"""Communication channel between the coordinator and the devices: latency and loss of set-points."""

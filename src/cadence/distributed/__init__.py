"""Scaling out: tensor parallelism inside a replica (torch.distributed: gloo on CPU, NCCL on GPU)
and several replicas behind one HTTP front end (a router over engine processes)."""

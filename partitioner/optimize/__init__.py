"""Optimize the model itself before it is split (issue 17): structured pruning, low-rank
factorization, knowledge distillation — each step measured and gated, the result's lineage
recorded.

- :mod:`~partitioner.optimize.steps`: the plan's frozen values (``Prune``, ``LowRank``, ``Distill``, ``Plan``);
- :mod:`~partitioner.optimize.prune`: channel pruning with Torch-Pruning (DepGraph);
- :mod:`~partitioner.optimize.reconstruct`: channel pruning that refits each pruned group's consumer by least
  squares on calibration frames (structured OBS channel choice; Torch-Pruning removes the channels);
- :mod:`~partitioner.optimize.variants`: optimized built-in models ``partition`` accepts by name (cached);
- :mod:`~partitioner.optimize.lowrank`, :mod:`~partitioner.optimize.lowrank_onnx`: SVD factorization in PyTorch
  and directly in an ONNX graph;
- :mod:`~partitioner.optimize.distill`: the student mimics the original (shared trainer,
  :mod:`partitioner.training`);
- :mod:`~partitioner.optimize.measure`: parameters, MACs, single-thread latency, held-out fidelity and the gate;
- :mod:`~partitioner.optimize.run`: the step loop; :mod:`~partitioner.optimize.sources`: models and footage;
- :mod:`~partitioner.optimize.report`: the table and the PNG; :mod:`~partitioner.optimize.cli`: ``splitinfer optimize``.

torch is imported only by the modules that need it.
"""

"""Design-space exploration: search spaces, a result cache, a Dask job runner and Pareto fronts.

``satc sweep`` and ``satc bench paper`` build on these (see docs/dse.md):

* :mod:`.space` - which hardware-config fields vary and how (grid or a sample of it);
* :mod:`.cache` - results on disk under a content hash of (model graph, sparsity,
  hardware config, compiler version, measurement settings);
* :mod:`.runner` - jobs on a dask.distributed cluster (a LocalCluster by default);
* :mod:`.pareto` - non-dominated points of cycles vs energy / on-chip memory, and their plot.
"""

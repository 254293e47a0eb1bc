"""Search the schedule space instead of sweeping it (manifest ``experiment.search``).

Strategies: ``grid`` (the sweep), ``random`` (seeded sampling without replacement),
``cost_model`` (rounds of rank -> measure -> retrain, from the champion model when there is
one), ``meta_schedule`` (TVM's own evolutionary search and XGBoost model over the space TVM
generates, measured with our firmware + QEMU). The interfaces follow TVM meta_schedule:
``base.py``. Entry points::

    from slicert_ops.search.run import run_search          # run_search(exp, cands, out_root)
    from slicert_ops.search.objective import parse_objective

Heavy modules (numpy, xgboost, TVM) load lazily: the manifest validator imports
``search.objective`` alone.
"""

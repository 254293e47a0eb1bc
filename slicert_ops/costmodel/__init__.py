"""Cost model: feature table, XGBoost/LightGBM training, registry, promotion, loading.

Modules (each small; heavy imports are lazy):
- ``features``: run folders / traces -> per-candidate feature table; candidate_features()
- ``base``: the CostModel interface (fit / predict / save / load)
- ``models``: XGBCostModel, LGBMCostModel, make_model()
- ``evaluate``: seeded split by candidate, Spearman / top-5 recall / MAPE, score
- ``train``: train(TrainConfig) -> TrainResult (the `slicert train` command)
- ``registry``: MLflow run, pyfunc model, registered versions, champion alias
- ``loader``: load_champion() for workers
- ``pyfunc_model``: the self-contained predictor MLflow serves
"""

"""Orchestration: the Airflow side of SliceRT-Farm, with no Airflow import at module level.

- ``settings``   where things are (repo, state, results) and the stage runner configuration
- ``dagspec``    manifest -> DAG: ids, Params (from the manifest schema), stage command lines
- ``airflow_cfg`` the 127.0.0.1-only Airflow configuration of the embedded stack
- ``stack``      ``slicert up`` / ``down`` / ``env``: the embedded stack (Airflow + services)
- ``client``     Airflow REST API client (JWT login) behind ``slicert submit``
- ``runners``    Local / Docker / Kubernetes stage runners: ``run(argv, networked)``
- ``taskgroup``  the plan -> batch -> aggregate (-> train) wiring the DAG files share
"""

"""Task bodies of the `llm_eval_promote` DAG, one module per task family
(validate, plan, generate, select, score, track, promote). The DAG file only
wires them; everything here runs without Airflow. Values passed between
stages are small JSON dicts (XComs); bulk data lives in the run's storage
(evaluation.runstore) and the content-addressed cache."""

"""Category reward models for DR-IRL: ``model`` (the two layouts, export), ``data`` + ``irl_trainer`` (IRL training),
``scorer`` (the scoring shared by ``reward_func.py`` and ``cli/serve_category_rm.py``)."""

"""Config -> the bound objects of a run (``setup.build``) and the typed loop settings."""

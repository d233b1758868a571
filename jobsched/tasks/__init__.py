"""Built-in tasks. They are known whenever ``--tasks`` is given or the service
runs, and do not make unknown tasks an error by themselves."""

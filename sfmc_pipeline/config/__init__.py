"""The declarative pipeline config (``pipeline.yaml``): one module per section, ``loader`` to read a file,
``checks`` for the rules that span sections."""

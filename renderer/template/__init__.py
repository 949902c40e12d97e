"""What a template is: the ``data.json`` model and its limits, the ZIP archive, loading and
validating a folder, customisations, the manifest and the JSON schema (pipeline step 1)."""

"""The router's HTTP front door (``batch-pipelines serve``): the vendors' request bodies in, any language out."""

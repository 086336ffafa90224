"""The ``milvus`` index kind: vectors in a Milvus collection (Milvus Lite, embedded, or a server).

One job per module:

- ``filters``: the filter language (``caption like "a dog%" and not image_id in [...]``),
  checked against the collection's fields and sent as parameters, never pasted;
- ``connection``: clients, the optional install, and the Milvus Lite folders this process serves;
- ``collection``: one collection of a (model, dataset), kept in step with its table;
- ``index``: ``MilvusIndex``, the ``VectorIndex`` that ``indexes=[milvus]`` builds and loads
  (registered by name in ``search.kinds.INDEX_KINDS``).

pymilvus is an optional extra (``img_search[milvus]``), imported on first connection.
"""

"""vlmserve on Ray: a Serve ingress in front of N engine replicas, a cache-affine request
router, and the folder job on Ray Data.

Ray is an optional extra (``vlmserve[ray]``). Only this package imports it, and only its
modules that need it (``hash_ring`` and ``routing`` are pure and tested without Ray), so
the rest of vlmserve imports and runs where Ray is not installed.
"""

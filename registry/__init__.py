"""registry — what a model IS and who vouches for it.

Pipeline: hashing → manifest → signing → store → index → services.
"""

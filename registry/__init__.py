"""registry — what a model IS and who vouches for it.

Pipeline: folder → safetensors_check → hashing → manifest → signing → store → index → services.

    LocalRegistry (the facade: submit/verify/get/list/materialize/ingest) → local.py
    ModelRecord, VerifiedModel                                            → records.py
    Home (paths of a data directory)                                      → home.py
    Identity, key_id_of, verify_signature (ECDSA P-256)                   → identity.py
    pae, sign_bundle, verify_bundle (DSSE in Sigstore bundles)            → dsse.py
    sign_statement, verify_statement, CONSENT_V1/ATTESTATION_V1/PLAN_V1   → statements.py
    scan_folder, check_relpath (safe folder walk, pickle refusal)         → folder.py
    check_safetensors (header validation)                                 → safetensors_check.py
    sha256_file, hash_file, hash_files (parallel, per-tensor)             → hashing.py
    architecture_fingerprint, tokenizer_fingerprint                       → fingerprints.py
    Manifest (mergenet.json)                                              → manifest.py
    sign_files, verify_model_sig (model.sig, OpenSSF model-signing 1.1.1) → signing.py
    verify_file_set (signature + signer + every digest)                   → verify.py
    BlobStore (content-addressed, atomic, resumable partials, blob locks) → store.py
    check_store (re-hash the store, name broken models, repair)           → store_check.py
    Index (SQLite, WAL)                                                   → index.py
    TrustList (trusted publisher keys)                                    → trust.py
    gRPC Registry/Transfer services                                       → services/

Nothing is re-exported here, so `import registry.errors` stays cheap for the CLI.
"""

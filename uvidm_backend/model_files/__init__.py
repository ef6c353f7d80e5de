"""Getting the model files onto this machine: from the hub, an official folder or GitHub; verified, recorded.

`sources` says where each file can come from, `transfer` moves bytes (resumable, with progress),
`verify` loads what arrived, `manifest` records it in `models.json`, `install` runs the whole job
for the command line and the service alike. `licences` is the text shown before any of it.
"""

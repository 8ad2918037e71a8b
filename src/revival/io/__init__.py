"""Read and write weights: key naming, lazy readers, and the one atomic writer.

    naming.py   diffusers <-> single-file (LDM) key names
    store.py    lazy tensors (read from disk on first use)
    readers.py  diffusers folders, .safetensors, .ckpt/.pt (weights_only) -> Checkpoint
    outputs.py  where outputs may go: never an input (or inside one), never a user's file
                without --overwrite; missing parent folders made
    writer.py   atomic writes of checkpoints (input's format, only updated tensors change),
                reports and every other file; never over an input or a user's files
"""
from revival.io.naming import LDM_PREFIX, diffusers_to_ldm, ldm_to_diffusers
from revival.io.readers import FORMATS, Checkpoint, load_checkpoint
from revival.io.outputs import check_distinct, check_new_output, is_single_file, make_parents
from revival.io.store import TensorStore, tensor_meta
from revival.io.writer import (CheckpointWriter, atomic_folder, atomic_write, check_output_path, check_report_path,
                     default_report_path, jsonable, plan_outputs, remove_stale_temporaries, save_checkpoint,
                     write_json, write_report)

__all__ = ["FORMATS", "LDM_PREFIX", "Checkpoint", "CheckpointWriter", "TensorStore", "atomic_folder",
           "atomic_write", "check_distinct", "check_new_output", "check_output_path", "is_single_file", "make_parents", "check_report_path", "default_report_path", "plan_outputs", "diffusers_to_ldm", "jsonable", "ldm_to_diffusers",
           "load_checkpoint", "remove_stale_temporaries", "save_checkpoint", "tensor_meta", "write_json",
           "write_report"]

"""Model folders and the Hub: [`save_model_folder`], [`push_model_folder_to_hub`], the generated model card, the
converter of official checkpoints and atomic folder writes."""

from .atomic_files import restore_interrupted_replace, write_folder_atomically
from .model_card import generate_model_card
from .model_folder import push_model_folder_to_hub, save_model_folder

__all__ = [
    "generate_model_card",
    "push_model_folder_to_hub",
    "restore_interrupted_replace",
    "save_model_folder",
    "write_folder_atomically",
]

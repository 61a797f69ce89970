"""Datasets of RGNet: MAD and Ego4D-NLQ query rows with lazily attached features, training samples, evaluation items.

- Loaders ([`load_mad`], [`load_ego4d_nlq`], [`load_cone_variant`]) return a [`GroundingDatasetDict`] of query rows;
  the features stay on disk and are read lazily (one handle per process, window-sized reads).
- [`RGNetTrainingDataset`] + [`RGNetTrainingCollator`] give training batches in the model's forward arguments,
  sampled as the official recipes do, reproducibly from (seed, epoch, index).
- Your own videos and sentences: [`prepare_dataset`] (`rgnet-hf prepare`) checks the annotations and writes a
  prepared folder; [`load_prepared`] reads it back like [`load_mad`].
- [`EvaluationVideoDataset`] gives every query of a video with the whole video, for inference.
"""

from .annotations import DROP_REASONS, FIX_REASONS, AnnotationError, DataReport, SplitReport, training_filter_reason
from .collator import RGNetTrainingCollator
from .evaluation_dataset import EvaluationVideoDataset, iter_evaluation_videos
from .feature_stores import FeatureError, FeatureSources, LazyVideoFeatures, l2_normalize
from .loaders import (
    GroundingDatasetDict,
    attach_features,
    cone_variant_files,
    format_summary,
    get_feature_sources,
    load_cone_variant,
    load_ego4d_nlq,
    load_grounding_dataset,
    load_mad,
    query_features,
    summarize,
)
from .own_annotations import AnnotationReport, check_annotations, parse_column_map, read_annotation_table
from .prepared import (
    PreparedDatasetError,
    check_model_fits_manifest,
    load_manifest,
    load_prepared,
    prepare_dataset,
    prepared_model_settings,
)
from .sampling import RGNetTrainingDataset, TrainingWindow, positive_window_probabilities, sample_training_window

__all__ = [
    "DROP_REASONS",
    "FIX_REASONS",
    "AnnotationError",
    "AnnotationReport",
    "DataReport",
    "EvaluationVideoDataset",
    "FeatureError",
    "FeatureSources",
    "GroundingDatasetDict",
    "LazyVideoFeatures",
    "PreparedDatasetError",
    "RGNetTrainingCollator",
    "RGNetTrainingDataset",
    "SplitReport",
    "TrainingWindow",
    "attach_features",
    "check_annotations",
    "check_model_fits_manifest",
    "cone_variant_files",
    "format_summary",
    "get_feature_sources",
    "iter_evaluation_videos",
    "l2_normalize",
    "load_cone_variant",
    "load_ego4d_nlq",
    "load_grounding_dataset",
    "load_mad",
    "load_manifest",
    "load_prepared",
    "parse_column_map",
    "positive_window_probabilities",
    "prepare_dataset",
    "prepared_model_settings",
    "query_features",
    "read_annotation_table",
    "sample_training_window",
    "summarize",
    "training_filter_reason",
]

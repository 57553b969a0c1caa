"""scikit-learn's estimator checks.

The checks that feed tabular data, a 2-D numeric array (n_samples,
n_features), cannot apply to estimators whose samples are images: they are
listed below, each with its reason, and their image equivalents (pickling,
idempotence, sample order and subset invariance, dtypes, read-only and
Fortran-ordered input, unchanged input) are tested in test_extractor.py.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sktransfer import CNNFeatureExtractor, FineTunedCNNClassifier

TABULAR = (
    "feeds a 2-D numeric array (n_samples, n_features) of tabular data; "
    "samples here are images (n, h, w[, c]) or file paths, and a 2-D numeric "
    "array is refused with an error that says how to reshape it"
)

_TABULAR_CHECKS = [
    "check_dict_unchanged",
    "check_dont_overwrite_parameters",
    "check_dtype_object",
    "check_estimators_dtypes",
    "check_estimators_empty_data_messages",
    "check_estimators_fit_returns_self",
    "check_estimators_nan_inf",
    "check_estimators_overwrite_params",
    "check_estimators_pickle",
    "check_f_contiguous_array_estimator",
    "check_fit2d_1feature",
    "check_fit2d_1sample",
    "check_fit2d_predict1d",
    "check_fit_check_is_fitted",
    "check_fit_idempotent",
    "check_fit_score_takes_y",
    "check_methods_sample_order_invariance",
    "check_methods_subset_invariance",
    "check_n_features_in",
    "check_n_features_in_after_fitting",
    "check_pipeline_consistency",
    "check_positive_only_tag_during_fit",
    "check_readonly_memmap_input",
    "check_transformer_data_not_an_array",
    "check_transformer_general",
]

_TABULAR_CLASSIFIER_CHECKS = [
    "check_class_weight_classifiers",
    "check_classifier_data_not_an_array",
    "check_classifiers_classes",
    "check_classifiers_one_label_sample_weights",
    "check_classifiers_train",
    "check_decision_proba_consistency",
    "check_sample_weight_equivalence_on_dense_data",
    "check_sample_weights_list",
    "check_sample_weights_not_an_array",
    "check_sample_weights_not_overwritten",
    "check_sample_weights_pandas_series",
    "check_sample_weights_shape",
    "check_supervised_y_2d",
]

EXPECTED_FAILED_CHECKS = {
    CNNFeatureExtractor: {name: TABULAR for name in _TABULAR_CHECKS},
    FineTunedCNNClassifier: {
        name: TABULAR
        for name in _TABULAR_CHECKS + _TABULAR_CLASSIFIER_CHECKS
        if not name.startswith("check_transformer")
    },
}


@parametrize_with_checks(
    [
        CNNFeatureExtractor(weights=None, input_size=32),
        FineTunedCNNClassifier(
            "mobilenet_v2", weights=None, input_size=32, head_epochs=1, epochs=0,
            early_stopping=False, augment=False, random_state=0,
        ),
    ],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS[type(est)],
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)

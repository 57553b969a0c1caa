"""scikit-learn's estimator checks.

Most checks that feed tabular data, a 2-D numeric array (n_samples,
n_features), cannot reach the property they test: samples here are images
(n, h, w[, c]) or file paths, and a 2-D numeric array is refused with an
error that says how to reshape it. Each such check is excused below with
its own reason, which names the test of the same property on images in
test_contract.py (same operations, same assertion, same tolerances), or
says why the property does not apply to images. The checks not listed
pass as they are.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sktransfer import CNNFeatureExtractor, FineTunedCNNClassifier


def on_images(test: str, prop: str) -> str:
    """The reason of a check whose property ``test`` tests on images."""
    return (
        f"feeds a 2-D numeric array, which is refused as not a batch of images; "
        f"the same property ({prop}) is tested on images in "
        f"test_contract.py::{test}"
    )


#: Checks of both estimators.
EXCUSED = {
    "check_dict_unchanged": on_images(
        "test_dict_unchanged", "predict, transform, decision_function and "
        "predict_proba leave __dict__ as fit left it"
    ),
    "check_dont_overwrite_parameters": on_images(
        "test_dont_overwrite_parameters",
        "fit adds or changes only attributes that start or end with '_'",
    ),
    "check_dtype_object": on_images(
        "test_dtype_object", "an object array of numbers is read as numbers"
    ),
    "check_estimators_dtypes": on_images(
        "test_estimators_dtypes",
        "float32, float64, int64 and int32 input fits and predicts",
    ),
    "check_estimators_empty_data_messages": on_images(
        "test_estimators_empty_data_messages",
        "no sample, or samples of no values, are a ValueError",
    ),
    "check_estimators_fit_returns_self": on_images(
        "test_estimators_fit_returns_self", "fit returns self"
    ),
    "check_estimators_nan_inf": on_images(
        "test_estimators_nan_inf",
        "NaN or infinite values are refused by fit and by every method",
    ),
    "check_estimators_overwrite_params": on_images(
        "test_estimators_overwrite_params",
        "fit neither changes nor mutates a parameter",
    ),
    "check_estimators_pickle": on_images(
        "test_estimators_pickle",
        "a pickled, or memmap-loaded, estimator gives the same outputs",
    ),
    "check_f_contiguous_array_estimator": on_images(
        "test_f_contiguous_array_estimator", "Fortran-ordered input fits and predicts"
    ),
    "check_fit2d_1feature": on_images(
        "test_fit_one_pixel_images",
        "the least input per sample, one feature or a 1x1 image, fits",
    ),
    "check_fit2d_predict1d": on_images(
        "test_predict_one_image_without_batch_axis",
        "one sample without its batch axis is refused: 'Reshape your data'",
    ),
    "check_fit_check_is_fitted": on_images(
        "test_fit_check_is_fitted",
        "check_is_fitted fails before fit and passes after",
    ),
    "check_fit_idempotent": on_images(
        "test_fit_idempotent",
        "fitting twice with the same random_state gives the same outputs",
    ),
    "check_fit_score_takes_y": on_images(
        "test_fit_score_takes_y", "fit, score and fit_transform take y second"
    ),
    "check_methods_sample_order_invariance": on_images(
        "test_methods_sample_order_invariance",
        "outputs do not depend on the order of the samples, to 1e-9",
    ),
    "check_methods_subset_invariance": on_images(
        "test_methods_subset_invariance",
        "a sample alone gives its output in the whole batch, to 1e-7",
    ),
    "check_n_features_in": (
        "asserts n_features_in_ == X.shape[1] after fit; images have no fixed "
        "number of input features (any size is resized to input_size_), so "
        "n_features_in_ is deliberately not set (see the estimators' Notes)"
    ),
    "check_n_features_in_after_fitting": (
        "asserts that the methods refuse X whose number of columns differs from "
        "n_features_in_; images of any size are resized to input_size_, so there "
        "is no number of features for predict or transform to compare"
    ),
    "check_pipeline_consistency": on_images(
        "test_pipeline_consistency",
        "make_pipeline(estimator) scores and transforms as the estimator",
    ),
    "check_positive_only_tag_during_fit": on_images(
        "test_positive_only_tag_during_fit",
        "with the positive_only tag (pixels are 0-255), negative values raise "
        "'Negative values in data'",
    ),
    "check_readonly_memmap_input": on_images(
        "test_readonly_memmap_input", "fit on read-only memmaps returns self"
    ),
}

EXPECTED_FAILED_CHECKS = {
    CNNFeatureExtractor: {
        **EXCUSED,
        "check_fit2d_1sample": on_images(
            "test_fit_one_image", "one sample fits, or the error says why"
        ),
        "check_transformer_data_not_an_array": on_images(
            "test_data_not_an_array and ::test_transformer_general",
            "input that is not an array (__array__, nested lists) transforms as "
            "the array does",
        ),
        "check_transformer_general": on_images(
            "test_transformer_general",
            "fit_transform, transform and a second fit_transform agree, also on "
            "read-only memmaps",
        ),
    },
    FineTunedCNNClassifier: {
        **EXCUSED,
        "check_class_weight_classifiers": on_images(
            "test_class_weight_classifiers",
            "on labels without signal, class weights of 1000 against 0.0001 "
            "decide 87% of the predictions",
        ),
        "check_classifier_data_not_an_array": on_images(
            "test_data_not_an_array",
            "input that is not an array (__array__, pandas) predicts as the "
            "array does",
        ),
        "check_classifiers_classes": on_images(
            "test_classifiers_classes",
            "string, object and -1/1 labels are the classes_ and the predictions",
        ),
        "check_classifiers_one_label_sample_weights": on_images(
            "test_classifiers_one_label_sample_weights",
            "weights zero on every sample but those of one class give a "
            "classifier that predicts that class, or an error naming 'class'",
        ),
        "check_classifiers_train": on_images(
            "test_classifiers_train",
            "training accuracy above 0.83, decision_function and predict_proba "
            "agree with predict, malformed input is refused",
        ),
        "check_decision_proba_consistency": on_images(
            "test_decision_proba_consistency",
            "predict_proba ranks samples as decision_function does",
        ),
        "check_sample_weight_equivalence_on_dense_data": (
            "asserts that integer sample weights fit exactly the model of repeated "
            "samples; training is stochastic minibatch gradient descent, where "
            "a repeated image changes the number of steps and the batches, so the "
            "fits agree only in expectation (scikit-learn excuses its own "
            "SGDClassifier and MLPClassifier alike)"
        ),
        "check_sample_weights_list": on_images(
            "test_sample_weights_containers[list]", "a list of weights is accepted"
        ),
        "check_sample_weights_not_an_array": on_images(
            "test_sample_weights_containers[not_an_array]",
            "weights, X and y that are not arrays (__array__) are accepted",
        ),
        "check_sample_weights_not_overwritten": on_images(
            "test_sample_weights_not_overwritten", "fit leaves sample_weight as given"
        ),
        "check_sample_weights_pandas_series": on_images(
            "test_sample_weights_containers[pandas_series]",
            "a Series of weights (X and y pandas too) is accepted",
        ),
        "check_sample_weights_shape": on_images(
            "test_sample_weights_shape",
            "sample_weight of another shape than (n_samples,) is a ValueError",
        ),
        "check_supervised_y_2d": on_images(
            "test_supervised_y_2d",
            "a column y warns DataConversionWarning and fits as the 1-D y",
        ),
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

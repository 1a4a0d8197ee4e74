"""xai_jax: JAX-native, functional explainability.

Every numerical piece is a pure function that can be `jit`-ted, `vmap`-ped and differentiated
inside your own code; random functions take an explicit PRNG `key` first.
"""

from xai_jax._version import __version__ as __version__
from xai_jax.contrastive import ContrastiveResult, cem_loss, contrastive_explanation
from xai_jax.distances import pairwise_distances
from xai_jax.estimators import numerical_gradient, urv_gradient
from xai_jax.gradient_attribution import (
    gradient_shap,
    guided_gradcam,
    input_x_gradient,
    layer_activation,
    layer_gradcam,
    layer_gradient_x_activation,
    saliency,
)
from xai_jax.integrated_gradients import (
    expected_gradients,
    integrated_gradients,
    layer_conductance,
    layer_integrated_gradients,
    neuron_conductance,
    smoothgrad,
)

# `xai_jax.kernel_shap` (like `xai_jax.lime`) is the function: importing it from its submodule
# rebinds the package attribute the submodule's first import set, and later imports of the
# submodule find it in `sys.modules` and leave the attribute alone.
from xai_jax.kernel_shap import kernel_shap
from xai_jax.kernels import exponential_kernel, shapley_kernel
from xai_jax.lime import LimeResult, lime
from xai_jax.metrics import (
    CurveResult,
    completeness,
    deletion,
    faithfulness_correlation,
    infidelity,
    insertion,
    randomisation_check,
    sensitivity_max,
)
from xai_jax.optimizers import aoexpgrad, elastic_net_fista
from xai_jax.perturbation_attribution import (
    feature_ablation,
    feature_permutation,
    occlusion,
    shapley_value_sampling,
    shapley_values,
)
from xai_jax.perturbations import bernoulli_perturbation, gaussian_perturbation
from xai_jax.propagation import (
    Epsilon,
    Gamma,
    ZPlus,
    deconvolution,
    deeplift,
    deeplift_shap,
    guided_backprop,
    layer_deeplift,
    lrp,
    propagation_gradient,
)
from xai_jax.quadrature import quadrature
from xai_jax.surrogates import RidgeFit, weighted_ridge
from xai_jax.wrappers import Explanation, ExplanationGenerator, IntegratedGradients, LimeBase

__all__ = [
    "ContrastiveResult",
    "CurveResult",
    "Epsilon",
    "Explanation",
    "ExplanationGenerator",
    "Gamma",
    "IntegratedGradients",
    "LimeBase",
    "LimeResult",
    "RidgeFit",
    "ZPlus",
    "aoexpgrad",
    "bernoulli_perturbation",
    "cem_loss",
    "completeness",
    "contrastive_explanation",
    "deconvolution",
    "deeplift",
    "deeplift_shap",
    "deletion",
    "elastic_net_fista",
    "expected_gradients",
    "exponential_kernel",
    "faithfulness_correlation",
    "feature_ablation",
    "feature_permutation",
    "gaussian_perturbation",
    "gradient_shap",
    "guided_gradcam",
    "guided_backprop",
    "infidelity",
    "input_x_gradient",
    "insertion",
    "integrated_gradients",
    "kernel_shap",
    "layer_activation",
    "layer_conductance",
    "layer_deeplift",
    "layer_gradcam",
    "layer_gradient_x_activation",
    "layer_integrated_gradients",
    "lime",
    "lrp",
    "neuron_conductance",
    "numerical_gradient",
    "occlusion",
    "pairwise_distances",
    "propagation_gradient",
    "quadrature",
    "randomisation_check",
    "saliency",
    "sensitivity_max",
    "shapley_kernel",
    "shapley_value_sampling",
    "shapley_values",
    "smoothgrad",
    "urv_gradient",
    "weighted_ridge",
]

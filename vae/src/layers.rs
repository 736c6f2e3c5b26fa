//! Small constructors shared by the models, so each model reads as its architecture.

use tch::nn;

/// A square 2-D convolution as PyTorch's `nn.Conv2d(cin, cout, k, stride, padding, bias)`.
pub(crate) fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64, padding: i64, bias: bool) -> nn::Conv2D {
    nn::conv2d(
        p,
        cin,
        cout,
        k,
        nn::ConvConfig {
            stride,
            padding,
            bias,
            ..Default::default()
        },
    )
}

/// `nn.GroupNorm(groups, channels, eps)` with affine parameters.
pub(crate) fn group_norm(p: nn::Path, groups: i64, channels: i64, eps: f64) -> nn::GroupNorm {
    nn::group_norm(
        p,
        groups,
        channels,
        nn::GroupNormConfig {
            eps,
            ..Default::default()
        },
    )
}

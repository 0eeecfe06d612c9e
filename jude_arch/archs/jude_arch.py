"""JUDE: deep joint unrolling for deblurring and low-light enhancement (Vo & Park, WACV 2025).

The network (docs/algorithm.md): a kernel estimator and a hyper-parameter net feed K unrolled stages of
an augmented-Lagrangian solver for

    min  λ1/2 ‖H ⊗ I − X‖² + λ2/2 ‖Z − P ⊙ Q‖² + g_Z(Z) + g_P(P) + g_Q(Q)   s.t.  P = R, Q = L, Z = I,

whose regularisers are learned proximal operators (ResUNets) and whose I-update is the closed-form FFT
solve of `data_step`. The illumination enhancer and the reflectance denoiser finish: Ŷ = L̂ ⊙ R̂.
"""
import warnings
from typing import NamedTuple

import torch
import torch.nn as nn
from basicsr.utils.registry import ARCH_REGISTRY

from .checkpoint_policy import AutoCheckpoint
from .config import JUDEConfig
from .data_step import FFTDataStep
from .hyper_net import HyperNet
from .kernel_estimator import KernelEstimator
from .operators import Denoiser, Enhancer, ProximalOperator


class State(NamedTuple):
    """The unrolled variables of docs/algorithm.md after a stage: the sharp low-light image I, its Retinex split
    P ⊙ Q with the copies R = P and L = Q, the latent image Z, and the multipliers Γ (P = R), Ω (Q = L), Δ (Z = I).
    All N×3×H×W."""
    I: torch.Tensor
    R: torch.Tensor
    L: torch.Tensor
    P: torch.Tensor
    Q: torch.Tensor
    Z: torch.Tensor
    Gamma: torch.Tensor
    Omega: torch.Tensor
    Delta: torch.Tensor

    @classmethod
    def initial(cls, X):
        """The released initialisation (docs/algorithm.md): every image variable X, the multipliers 0."""
        zeros = torch.zeros_like(X)
        return cls(I=X, R=X, L=X, P=X, Q=X, Z=X, Gamma=zeros, Omega=zeros, Delta=zeros)


@ARCH_REGISTRY.register()
class JUDE(nn.Module):
    """JUDE network.

    Args:
        preset (str): 'full' (the paper's model, released layer shapes; the default), 'small' (K = 3, ResUNet
            widths 16/32/64/128 with 1 block, narrower heads; for CPU and tests) or 'released' (the authors'
            released network, for their converted checkpoint). The presets are `PRESETS`.
        **options: any field of `JUDEConfig` (num_stages, unet_channels, kernel_size, boundary, refine_steps,
            checkpoint_stages, ...), replacing the preset's value; None keeps it. An unknown or invalid option
            is one ValueError naming it.

    Attributes:
        config (dict): every option (the preset resolved): build_network({'type': 'JUDE', **net.config})
            rebuilds this network.
    """

    def __init__(self, preset='full', **options):
        super().__init__()
        cfg = JUDEConfig.from_options(preset, **options)
        if cfg.num_stages < 3:
            warnings.warn(
                f"JUDE: num_stages={cfg.num_stages} leaves the FFT data step without any effect on the output: "
                'stage t solves for I_t, which reaches Ŷ only through Z_(t+1) and then P, Q of stage t+2, so the '
                'first solve that counts needs 3 stages (3 gives one, 5 gives three); use num_stages >= 3 unless '
                'you want a network without the deblurring step', UserWarning, stacklevel=2)
        self.config = cfg.as_dict()
        self.num_stages = cfg.num_stages
        self.boundary = cfg.boundary
        self.refine_steps = cfg.refine_steps
        self.enhancer_input = cfg.enhancer_input
        self.denoiser_input = cfg.denoiser_input

        layout = dict(memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
        self.kernel_estimator = KernelEstimator(cfg.kernel_size, cfg.num_kernels, cfg.kernel_width,
                                                cfg.kernel_pad_input, cfg.kernel_statistics)
        self.hyper_net = HyperNet(cfg.num_stages, cfg.num_kernels, batch_stats=cfg.hypernet_batch_stats)
        copies = 1 if cfg.share_operators else cfg.num_stages

        def operators():
            return nn.ModuleList(
                ProximalOperator(cfg.unet_channels, cfg.unet_blocks, checkpointed=cfg.checkpoint_stages is True,
                                 **layout)
                for _ in range(copies))

        self.prox_p, self.prox_q, self.prox_z = operators(), operators(), operators()
        self.enhancer = Enhancer(3, 3, cfg.enhancer_width, cfg.enhancer_variant, **layout)
        self.denoiser = Denoiser(3, cfg.denoiser_width, **layout)
        self.memory_format = layout['memory_format']
        self.auto_checkpoint = None
        if cfg.checkpoint_stages == 'auto':
            probe_options = dict(self.config, checkpoint_stages=False)
            self.auto_checkpoint = AutoCheckpoint(
                lambda device: JUDE(**probe_options).to(device).train(),
                lambda: sum(p.numel() * p.element_size() for p in self.parameters()))

    @classmethod
    def option_names(cls):
        """Every option the constructor takes: `preset` and the fields of `JUDEConfig` (read by the options check)."""
        return ('preset', ) + JUDEConfig.option_names()

    def forward(self, x, return_intermediates=False):
        """Restore x (N×3×H×W in [0, 1], any H, W ≥ 1).

        Returns:
            Tensor: the restored N×3×H×W image Ŷ (not clamped), or, with return_intermediates=True,
            a dict with 'output', 'kernel' (N×B×k×k), 'weight_map' (N×B×H×W, only when B > 1),
            'lambdas' (N×K×5: λ1..λ5), 'gammas' (N×K×3: γ_P, γ_Q, γ_Z), per-stage lists of K tensors
            'I', 'R', 'L', 'P', 'Q', 'Z', 'Gamma', 'Omega', 'Delta' (the `State` fields), and 'L_hat', 'R_hat'.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f'JUDE expects an N×3×H×W RGB batch, got shape {tuple(x.shape)}')
        x = x.contiguous()
        if self.auto_checkpoint is not None:
            self._set_checkpointing(x)
        kernel, weight_map = self.kernel_estimator(x.contiguous(memory_format=self.memory_format))
        lambdas, gammas = self.hyper_net(kernel)
        data_step = FFTDataStep(x, kernel, weight_map, self.boundary, self.refine_steps)

        state, history = State.initial(x), []
        last = self.num_stages - 1
        for t in range(self.num_stages):
            # λ1..λ5 of stage t as N×1×1×1 (to scale images), γ_P, γ_Q, γ_Z as N (one noise map per sample).
            lam = tuple(v.view(-1, 1, 1, 1) for v in lambdas[:, t].unbind(1))
            gam = gammas[:, t].unbind(1)
            state = self.retinex_updates(t, state, lam, gam)
            # What reaches Ŷ (docs/algorithm.md): R_K and L_K, which read Z_(K-1), which reads I_(K-2). Unless
            # the intermediates are asked for, the last stage stops after step 4 and stage K-1 skips its I-solve.
            if return_intermediates or t < last:
                state = self.sharp_image_updates(t, state, lam, gam, data_step,
                                                 solve=return_intermediates or t < last - 1)
            if return_intermediates:
                history.append(state)

        L_hat = self.enhancer(state.L if self.enhancer_input == 'L' else state.P * state.Q)
        R_hat = self.denoiser(state.R if self.denoiser_input == 'R' else state.P)
        output = L_hat * R_hat
        if not return_intermediates:
            return output
        result = dict(output=output, kernel=kernel, lambdas=lambdas, gammas=gammas, L_hat=L_hat, R_hat=R_hat)
        if weight_map is not None:
            result['weight_map'] = weight_map
        for name in State._fields:
            result[name] = [getattr(stage, name) for stage in history]
        return result

    @torch.compiler.disable
    def _set_checkpointing(self, x):
        """checkpoint_stages 'auto': checkpoint the operators of this pass only when it records gradients and
        its activations would not fit (`checkpoint_policy`); outside compiled code, as it measures and logs."""
        training = torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())
        checkpointed = training and self.auto_checkpoint(x)
        for operator in (*self.prox_p, *self.prox_q, *self.prox_z):
            operator.checkpointed = checkpointed

    def retinex_updates(self, t, state, lam, gam):
        """Steps 1-4 of stage t (docs/algorithm.md): P, R, Q, L."""
        I, R, L, P, Q, Z, Gamma, Omega, Delta = state
        _, lam2, lam3, lam4, _ = lam
        gamma_p, gamma_q, _ = gam
        i = self._operator_index(t)
        P = self.prox_p[i]((lam2 * Q * Z + lam3 * R + Gamma) / (lam2 * Q * Q + lam3), gamma_p)  # step 1, eq. (9)
        R = P - Gamma / lam3  # step 2, eq. (10), which prints (P + Γ)/λ3: a typo
        Q = self.prox_q[i]((lam2 * P * Z + lam4 * L + Omega) / (lam2 * P * P + lam4), gamma_q)  # step 3, eq. (14)
        L = Q - Omega / lam4  # step 4, eq. (15): the same typo
        return state._replace(P=P, R=R, Q=Q, L=L)

    def sharp_image_updates(self, t, state, lam, gam, data_step, solve=True):
        """Steps 5-7 of stage t (docs/algorithm.md): Z, the multipliers Γ and Ω, the I-solve and Δ.

        With solve=False the I-solve and the Δ-update are left out: I and Δ keep their values of stage t-1.
        """
        I, R, L, P, Q, Z, Gamma, Omega, Delta = state
        lam1, lam2, lam3, lam4, lam5 = lam
        _, _, gamma_z = gam
        i = self._operator_index(t)
        Z = self.prox_z[i]((lam2 * P * Q + lam5 * I + Delta) / (lam2 + lam5), gamma_z)  # step 5, eq. (19)
        # Step 7 for Γ and Ω comes before the I-solve, which neither reads.
        Gamma = Gamma + lam3 * (R - P)  # step 7
        Omega = Omega + lam4 * (L - Q)  # step 7
        if solve:
            I = data_step.solve(Z, Delta, lam1, lam5)  # step 6, eq. (21), which prints Ω for Δ: a typo
            Delta = Delta + lam5 * (I - Z)  # step 7
        return State(I, R, L, P, Q, Z, Gamma, Omega, Delta)

    def _operator_index(self, t):
        """Which D_P, D_Q, D_Z stage t uses: the shared one, or its own (share_operators: false)."""
        return 0 if len(self.prox_p) == 1 else t

    def tile_overlap(self):
        """Overlap of neighbouring tiles when an image is restored in tiles: two blur-kernel widths, rounded up to
        a multiple of 8 (the outer quarter of the overlap, more than half a kernel, is where a tile's blur reaches
        past its edge; the middle half is the cross-fade, see `jude_arch.restore.tiling`)."""
        return -(-2 * self.kernel_estimator.kernel_size // 8) * 8

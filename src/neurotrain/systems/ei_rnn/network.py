"""Dale's-law E-I rate RNN fitted to neural PSTHs (seed: ei-rnn-final-training-plan.md).

Dynamics, per time step of ``dt`` with alpha = dt / tau::

    e_t   = Embed(u_t)                                   input embedding [embed_dim]
    x_t+1 = (1 - alpha) x_t + alpha (W_rec r_t + W_in e_t + b) + sqrt(2 alpha) noise_scale xi
    r_t   = softplus(x_t)                                rates, expected spike counts per bin
    z_t   = W_out r_t[E]                                 task outputs from excitatory units

``W_rec = |W_raw| * sign`` with sign +1 on excitatory and -1 on inhibitory columns (Dale's
law, by construction after every optimizer step) and a zero diagonal; at initialisation its
spectral radius is ``spectral_radius``. The attention embedding treats each input channel as
a token, attends across channels with ``heads`` heads (one value per head and token), and
projects the [n_inputs * heads] result to ``embed_dim``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from neurotrain.training import torch_numerics  # noqa: F401  (sets up MKL's vector math before any threaded call)


class AttentionEmbedding(nn.Module):
    """Multi-head attention across input channels: u [B, T, n_inputs] -> [B, T, embed_dim]."""

    def __init__(self, n_inputs: int, embed_dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.token_scale = nn.Parameter(torch.randn(n_inputs, head_dim) / math.sqrt(head_dim))
        self.token_bias = nn.Parameter(torch.randn(n_inputs, head_dim) * 0.1)
        self.q = nn.Linear(head_dim, heads * head_dim, bias=False)
        self.k = nn.Linear(head_dim, heads * head_dim, bias=False)
        self.v = nn.Linear(head_dim, heads, bias=False)
        self.out = nn.Linear(n_inputs * heads, embed_dim)

    def attention(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention maps [B, T, H, n, n] (query channel x key channel) and values [B, T, H, n, 1]."""
        B, T, n = u.shape
        tok = u.unsqueeze(-1) * self.token_scale + self.token_bias  # [B, T, n, d]
        q = self.q(tok).view(B, T, n, self.heads, self.head_dim).transpose(2, 3)  # [B,T,H,n,d]
        k = self.k(tok).view(B, T, n, self.heads, self.head_dim).transpose(2, 3)
        v = self.v(tok).transpose(2, 3).unsqueeze(-1)  # [B, T, H, n, 1]
        return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim), dim=-1), v

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        B, T, n = u.shape
        att, v = self.attention(u)
        mixed = (att @ v).squeeze(-1).transpose(2, 3).reshape(B, T, n * self.heads)  # [B,T,n*H]
        return self.out(mixed)

    def attention_weights(self) -> dict:
        """Q [H*d, d], K [H*d, d], V [H, d] projection weights."""
        return {"Q": self.q.weight.detach(), "K": self.k.weight.detach(), "V": self.v.weight.detach()}


class Recurrence(torch.autograd.Function):
    """The rate recurrence with a hand-written backward pass (backpropagation through time).

    ``Recurrence.apply(c, x0, w, decay)`` with currents c [B, T, N], initial state x0 [B, N],
    weights w [N_pre, N_post] and a float ``decay`` returns rates r [B, T, N] of

        x_t = decay x_{t-1} + c_t + r_{t-1} w,   r_t = softplus(x_t),   t = 1..T,

    r_0 = softplus(x0). It computes what the step-by-step autograd loop computes, but records no
    graph per step: the forward pass is one ``addmm`` and one softplus per step, written into the
    saved buffers, the backward pass one ``addmm`` and two element-wise operations per step and a
    single product for the weight gradient (sum_t r_{t-1}^T dL/dx_t). A 60-step recurrence of
    [B, 50] states is bound by per-operation overhead, so fewer operations are what makes it
    faster. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, c, x0, w, decay: float):
        B, T, N = c.shape
        xs = c.new_empty(T + 1, B, N)
        rs = c.new_empty(T + 1, B, N)
        xs[0] = x0
        rs[0] = F.softplus(x0)
        ct = c.transpose(0, 1).contiguous()  # time-major: each step reads one contiguous [B, N] block
        for t in range(T):  # written in place into the saved buffers: no copies, no temporaries
            x = torch.add(ct[t], xs[t], alpha=decay, out=xs[t + 1])
            x.addmm_(rs[t], w)
            torch.ops.aten.softplus.out(x, 1, 20, out=rs[t + 1])  # F.softplus(x), beta 1, threshold 20
        ctx.save_for_backward(xs, rs, w)
        ctx.decay = decay
        return rs[1:].transpose(0, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        xs, rs, w = ctx.saved_tensors
        decay = ctx.decay
        T, N = xs.shape[0] - 1, xs.shape[2]
        # d softplus / dx = sigmoid(x); F.softplus is linear (slope 1) above x = 20, where
        # sigmoid(x) is 1 to within 2e-9 (exactly 1 in float32)
        slope = torch.sigmoid(xs)
        B = xs.shape[1]
        gxs = g.new_empty(T, B, N).copy_(g.transpose(0, 1))  # dL/dr_t, time-major (a copy: g is not ours
        # to change), overwritten step by step with dL/dx_t, t = 1..T
        wt = w.t()
        gx = gxs[T - 1].mul_(slope[T])
        for t in range(T - 1, 0, -1):
            gr = gxs[t - 1].addmm_(gx, wt).mul_(slope[t])  # r_t feeds x_{t+1}
            gx = gr.add_(gx, alpha=decay)
        gx0 = (gx @ wt).mul_(slope[0]).add_(gx, alpha=decay)
        gw = rs[:-1].reshape(-1, N).t() @ gxs.reshape(-1, N)
        return gxs.transpose(0, 1), gx0, gw, None


class EIRNN(nn.Module):
    """Rate RNN with Dale's law whose units are the recorded neurons.

    ``ei_labels`` [N]: 0 = excitatory, 1 = inhibitory. Forward takes inputs u [B, T, n_inputs]
    and returns rates [B, T, N] (expected counts per bin) and outputs [B, T, n_outputs].
    """

    def __init__(self, n_inputs: int, n_outputs: int, ei_labels, input_embed_dim: int = 56,
                 input_embed_type: str = "attention", attention_heads: int = 4, attention_dim: int = 16,
                 learnable_h0: bool = True, h0_init: float = 0.1, tau: float = 50.0, noise_scale: float = 0.1,
                 dt: float = 25.0, spectral_radius: float = 0.9):
        super().__init__()
        labels = torch.as_tensor(ei_labels, dtype=torch.long)
        n = labels.numel()
        self.n_neurons, self.alpha, self.noise_scale = n, dt / tau, noise_scale
        self.register_buffer("ei_labels", labels)
        self.register_buffer("sign", torch.where(labels == 1, -1.0, 1.0))
        self.register_buffer("offdiag", 1.0 - torch.eye(n))
        if input_embed_type == "attention":
            self.embed = AttentionEmbedding(n_inputs, input_embed_dim, attention_heads, attention_dim)
        else:
            self.embed = nn.Linear(n_inputs, input_embed_dim)
        self.w_in = nn.Linear(input_embed_dim, n, bias=False)
        n_exc = int((labels == 0).sum())
        n_inh = max(n - n_exc, 1)
        raw = torch.rand(n, n) * (torch.rand(n, n) < 0.5)
        raw[:, labels == 1] *= n_exc / n_inh  # balance E and I input at initialisation
        w = raw * self.sign * self.offdiag
        rho = torch.linalg.eigvals(w).abs().max().clamp_min(1e-9)
        self.w_rec_raw = nn.Parameter(raw * spectral_radius / rho)
        self.bias = nn.Parameter(torch.zeros(n))
        h0 = torch.full((n,), float(h0_init))
        if learnable_h0:
            self.h0 = nn.Parameter(h0)
        else:
            self.register_buffer("h0", h0)
        self.w_out = nn.Linear(n_exc, n_outputs, bias=False) if n_outputs > 0 else None
        self.register_buffer("exc_index", torch.nonzero(labels == 0).flatten())

    @property
    def w_rec(self) -> torch.Tensor:
        """Effective recurrent weights [N_post, N_pre] obeying Dale's law."""
        return self.w_rec_raw.abs() * self.sign * self.offdiag

    def input_drive(self, u: torch.Tensor) -> torch.Tensor:
        """W_in Embed(u): inputs [..., n_inputs] -> input current [..., N]."""
        shape = u.shape
        e = self.embed(u.reshape(1, -1, shape[-1]))
        return self.w_in(e).reshape(*shape[:-1], -1)

    def forward(self, u: torch.Tensor, noise: bool = True, generator: torch.Generator | None = None):
        """Inputs u [B, T, n_inputs] -> (rates [B, T, N], outputs [B, T, n_outputs])."""
        return self.dynamics(self.input_drive(u), noise, generator)

    def dynamics(self, drive_in: torch.Tensor, noise: bool = True, generator: torch.Generator | None = None):
        """Run the recurrent dynamics on input currents [B, T, N]."""
        B, T, N = drive_in.shape
        a = self.alpha
        # Everything that does not depend on the state is computed for all steps at once:
        # c_t = alpha (W_in e_t + b) + sqrt(2 alpha) noise_scale xi_t.
        c = a * (drive_in + self.bias)
        sd = math.sqrt(2 * a) * self.noise_scale
        if noise and sd > 0:
            c = c + sd * torch.randn((B, T, N), generator=generator, device=drive_in.device)
        w_rec_scaled = a * self.w_rec.t()
        rates = Recurrence.apply(c, self.h0.expand(B, -1), w_rec_scaled, 1.0 - a)
        if self.w_out is None:
            return rates, rates[..., :0]
        # The E units' rates are gathered from the recurrence's time-major buffer as one
        # contiguous [T B, N] matrix, then laid out [B, T, E] for W_out (whose weight gradient
        # then sums over trials and time in the same order as before). The same numbers and
        # gradients as rates[..., exc_index]; measured at the default size: 0.35 ms against
        # 1.2 ms for index_select on the [B, T, N] view, and the advanced index's backward
        # took 2.3 ms more.
        exc = rates.transpose(0, 1).reshape(T * B, N).index_select(1, self.exc_index)
        return rates, self.w_out(exc.view(T, B, -1).transpose(0, 1).contiguous())


def condition_matrix(conditions: torch.Tensor, n_conditions: int) -> torch.Tensor:
    """[C, B] averaging matrix: row c averages the trials of condition c."""
    onehot = F.one_hot(conditions, n_conditions).t().float()
    return onehot / onehot.sum(1, keepdim=True).clamp_min(1.0)


class ConditionMean(torch.autograd.Function):
    """PSTH per condition: ``ConditionMean.apply(x, conditions, M)`` with trials x [B, T, N],
    condition labels [B] (int64) and ``M = condition_matrix(conditions, C)`` returns [C, T, N],
    the mean over each condition's trials, as one [C, B] x [B, T N] product.

    The backward pass gathers instead of multiplying by M^T: every trial belongs to one condition,
    so row b of M^T g is M[c_b, b] g[c_b] plus exact zeros, the same numbers as the product
    (scaled per condition first, then gathered: one pass over [B, T, N]).
    The product's transpose has an inner dimension of C (a few conditions), which runs far
    below the matmul rate (measured: 1.9 ms for 264 trials x 3000 values, the gather 0.2 ms).
    """

    @staticmethod
    def forward(ctx, x, conditions, M):
        ctx.save_for_backward(conditions, M)
        return (M @ x.reshape(x.shape[0], -1)).reshape(M.shape[0], *x.shape[1:])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        conditions, M = ctx.saved_tensors
        weight = M.amax(1)  # [C]: 1 / trials of condition c (the one non-zero value of row c)
        gx = (g * weight.view(-1, *([1] * (g.dim() - 1)))).reshape(g.shape[0], -1).index_select(0, conditions)
        return gx.view(conditions.shape[0], *g.shape[1:]), None, None


def condition_psth(x: torch.Tensor, conditions: torch.Tensor, n_conditions: int) -> torch.Tensor:
    """Trials x [B, T, N] and their conditions [B] -> PSTH [C, T, N] (mean over each condition's
    trials; a condition without trials gives zeros). Differentiable in x (``ConditionMean``)."""
    return ConditionMean.apply(x, conditions, condition_matrix(conditions, n_conditions))


def neuron_loss(model_psth: torch.Tensor, target_psth: torch.Tensor) -> torch.Tensor:
    """L_neuron: PSTH squared error per neuron over (condition, time), divided by the neuron's
    PSTH variance (so every neuron counts equally), averaged over neurons. PSTHs [C, T, N]."""
    var = target_psth.var(dim=(0, 1), unbiased=False).clamp_min(1e-6)
    return (((model_psth - target_psth) ** 2).mean(dim=(0, 1)) / var).mean()


def trial_targets(spikes: torch.Tensor, conditions: torch.Tensor, n_conditions: int) -> list[tuple]:
    """The data side of L_trial, which does not change during training: per condition with at
    least two trials, its trials' indices [n_c], their sorted single-trial mean counts [n_c, N]
    and the across-trial variance of those means [N] (floored at 1e-4). spikes [B, T, N]."""
    s_d = spikes.mean(1)
    targets = []
    for c in range(n_conditions):
        index = torch.nonzero(conditions == c).flatten()
        if index.numel() < 2:
            continue
        d = torch.sort(s_d.index_select(0, index), 0).values
        targets.append((index, d, d.var(0).clamp_min(1e-4)))
    return targets


def trial_loss(rates: torch.Tensor, targets: list[tuple]) -> torch.Tensor:
    """L_trial: trial matching. Per condition and neuron, the sorted single-trial mean counts of
    the model (with Poisson averaging noise added by reparameterisation) are matched to the
    sorted single-trial mean counts of the data (a 1-D optimal transport), normalised by the
    data's across-trial variance. rates [B, T, N]; ``targets`` is the data side,
    ``trial_targets(spikes, conditions, n_conditions)`` of the same trials."""
    T = rates.shape[1]
    s_m = rates.mean(1)
    s_m = s_m + torch.sqrt(s_m.detach().clamp_min(1e-6) / T) * torch.randn_like(s_m)
    losses = [(((torch.sort(s_m.index_select(0, index), 0).values - d) ** 2).mean(0) / var_d).mean()
              for index, d, var_d in targets]
    return torch.stack(losses).mean() if losses else rates.sum() * 0.0


def reg_loss(model: EIRNN, model_psth: torch.Tensor, target_psth: torch.Tensor, lambda_reg: float,
             lambda_scale: float, lambda_var: float) -> torch.Tensor:
    """L_reg: L2 on W_rec and W_in (lambda_reg), relative mismatch of each neuron's mean rate
    (lambda_scale) and of its temporal PSTH variance in log scale (lambda_var)."""
    l2 = model.w_rec.pow(2).sum() + model.w_in.weight.pow(2).sum()
    mean_t = target_psth.mean(dim=(0, 1)).clamp_min(1e-4)
    scale = (((model_psth.mean(dim=(0, 1)) - mean_t) / mean_t) ** 2).mean()
    var_t = target_psth.var(dim=(0, 1), unbiased=False).clamp_min(1e-6)
    var_m = model_psth.var(dim=(0, 1), unbiased=False).clamp_min(1e-6)
    var = (torch.log(var_m / var_t) ** 2).mean()
    return lambda_reg * l2 + lambda_scale * scale + lambda_var * var


def output_loss(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Task-output error, normalised by the target's variance per output. [B, T, n_outputs]."""
    if target.shape[-1] == 0:
        return outputs.sum() * 0.0
    var = target.var(dim=(0, 1), unbiased=False).clamp_min(1e-6)
    return (((outputs - target) ** 2).mean(dim=(0, 1)) / var).mean()


MODEL_KEYS = ("input_embed_dim", "input_embed_type", "attention_heads", "attention_dim", "learnable_h0",
              "h0_init", "tau", "noise_scale", "dt", "spectral_radius")


def build_model(model_config: dict) -> EIRNN:
    """Rebuild a model from the ``model_config`` stored in every checkpoint."""
    kw = {k: model_config[k] for k in MODEL_KEYS}
    return EIRNN(model_config["n_inputs"], model_config["n_outputs"], model_config["ei_labels"], **kw)

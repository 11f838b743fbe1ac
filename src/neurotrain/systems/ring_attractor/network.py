"""The ring-attractor head-direction network (Zhang 1996, with an explicit inhibitory population).

An excitatory ring of ``n_exc`` neurons with preferred directions evenly spaced on the circle
and local E->E connectivity (a Gaussian of circular distance, width ``sigma_ee`` in radians); an
inhibitory population of ``n_inh`` neurons driven by the ring (``W_EI``) that feeds back onto it
(``W_IE``, signed, mostly negative). Angular velocity moves the bump through the derivative of
the E->E kernel (an odd, rotating component scaled by the velocity, Zhang's mechanism). A
landmark ("light") input pins the bump to the true direction while it is visible. Head direction
is read out as the population vector of the excitatory rates.

Learnable: the gains ``g_ee``, ``g_ei``, ``g_ie``, the velocity gain ``g_av``, the noise rates
``noise_rate_e``, ``noise_rate_i`` (Hz of background Poisson input, in the Gaussian
approximation: input noise with standard deviation ``noise_scale * sqrt(rate / 10 Hz)``), and
the E<->I matrices ``W_EI`` [n_inh, n_exc], ``W_IE`` [n_exc, n_inh]. ``W_EE`` is fixed
structure. :meth:`apply_constraints` keeps the seed's biological ranges after every optimizer
step.

Rates are dimensionless in [0, 1) (``relu(tanh(u))``); ``max_rate`` (Hz) converts them to Hz for
spike counts.

The recurrent step is one dense product of the full state [B, n_exc + n_inh] with a
[n_exc + n_inh, 2 n_exc + n_inh] matrix assembled once per forward pass from the gains: the
recurrent input of both populations and the rotating component in one matmul. The recurrence
has a hand-written backward pass (:class:`_Recurrence`) that forms the weight gradient as one
large product instead of one thin product per time step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# The seed's biological ranges.
GAIN_RANGE = (0.1, 10.0)
NOISE_RATE_RANGE = (0.1, 20.0)
W_IE_MAX = 0.5
W_EI_RANGE = (-0.5, 2.0)


def circular_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Signed circular difference a - b wrapped to [-pi, pi)."""
    return torch.remainder(a - b + math.pi, 2 * math.pi) - math.pi


class _Recurrence(torch.autograd.Function):
    """The network's recurrence over T steps with hand-written backpropagation through time.

    Forward, per step: h = r @ M; drive = h[:, :N] + pad(omega_t * h[:, N:]) + ext_t;
    u = lerp(u, drive, alpha); r = max(tanh(u), 0). Autograd would accumulate the weight
    gradient as T thin [N, B] x [B, N + E] products plus T additions into a [N, N + E] buffer;
    here the backward pass collects the per-step gradients of h and forms dL/dM as one
    [N, T*B] x [T*B, N + E] product, and runs no autograd bookkeeping per step.
    Inputs: M [N, N + E], ext [T, N, B], omega [T, B], u0 [B, N], alpha [N]; returns the rates
    [N, T, B] and the final state [B, N]. Gradients flow to M, ext and u0.
    """

    @staticmethod
    def forward(ctx, M, ext, omega, u0, alpha, ne):
        T, N, B = ext.shape
        # Unit-major layout ([N, B] per step): the thin products run as [N + E, N] x [N, B],
        # which BLAS does markedly faster than [B, N] x [N, N + E] for small batches. The rates
        # of all steps live in one [N, T + 1, B] buffer, so that the weight gradient's big
        # product reads them without a copy.
        Mt = M.t().contiguous()  # [N + E, N]
        ext = ext.contiguous()
        w = omega[:, None, :]  # [T, 1, B]
        a = alpha[:, None]  # [N, 1]
        rs = ext.new_empty(N, T + 1, B)
        h = ext.new_empty(M.shape[1], B)
        drive = ext.new_empty(N, B)
        u = u0.t().clone(memory_format=torch.contiguous_format)  # never a view of the caller's state
        torch.tanh(u, out=rs[:, 0]).clamp_(min=0.0)
        for t in range(T):  # every operation writes in place: no allocation per step
            torch.mm(Mt, rs[:, t], out=h)
            torch.add(h[:N], ext[t], out=drive)
            drive[:ne].addcmul_(w[t], h[N:])
            u.lerp_(drive, a)
            torch.tanh(u, out=rs[:, t + 1]).clamp_(min=0.0)
        ctx.save_for_backward(M, omega, alpha, rs)
        ctx.ne = ne
        return rs[:, 1:], u.t().contiguous()  # [N, T, B] (a view of the buffer), [B, N]

    @staticmethod
    def backward(ctx, g_rates, g_u_final):
        M, omega, alpha, rs = ctx.saved_tensors
        ne = ctx.ne
        N, T1, B = rs.shape
        T = T1 - 1
        deriv = (1.0 - rs * rs).masked_fill_(rs == 0, 0.0)  # d r / d u for every step at once
        g_rt = g_rates  # [N, T, B]
        g_h = rs.new_empty(M.shape[1], T, B)  # its first N rows are the gradient of ext
        g_u = g_u_final.t().clone(memory_format=torch.contiguous_format) if g_u_final is not None else rs.new_zeros(N, B)
        g_r = rs.new_empty(N, B)
        g_r_next = rs.new_zeros(N, B)  # gradient reaching r_t through h_{t+1}
        w = omega[:, None, :]
        a = alpha[:, None]
        keep = 1.0 - a
        for t in range(T - 1, -1, -1):
            if g_rt is not None:
                torch.add(g_rt[:, t], g_r_next, out=g_r)
            else:
                g_r.copy_(g_r_next)
            g_u.addcmul_(g_r, deriv[:, t + 1])
            torch.mul(g_u, a, out=g_h[:N, t])
            torch.mul(g_h[:ne, t], w[t], out=g_h[N:, t])
            torch.mm(M, g_h[:, t], out=g_r_next)
            g_u.mul_(keep)
        g_u0 = g_u.addcmul_(g_r_next, deriv[:, 0]).t()
        # dL/dM = sum_t r_t g_h_t^T as one [N, T B] x [T B, N + E] product
        g_M = rs[:, :T].reshape(N, T * B) @ g_h.reshape(M.shape[1], T * B).t()
        return g_M, g_h[:N].permute(1, 0, 2), None, g_u0, None, None


class RingAttractorNetwork(nn.Module):
    def __init__(self, n_exc: int = 800, n_inh: int = 200, sigma_ee: float = 0.3, dt: float = 0.02,
                 tau_e: float = 0.04, tau_i: float = 0.02, g_ee: float = 2.0, g_ei: float = 1.0,
                 g_ie: float = 3.0, g_av: float = 0.6, noise_rate_e: float = 10.0, noise_rate_i: float = 10.0,
                 noise_scale: float = 0.05, landmark_strength: float = 1.0, landmark_kappa: float = 4.0,
                 tonic_e: float = 0.1, tonic_i: float = 0.0, max_rate: float = 40.0, weight_spread: float = 0.9):
        """Defaults are those of the ``ring_attractor.model`` config block (and the embedded
        data's ``dt``), so ``RingAttractorNetwork(n_exc=800, n_inh=200, sigma_ee=0.3)`` is the
        network the workflow trains."""
        super().__init__()
        self.init_args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        for name, v in (("n_exc", n_exc), ("n_inh", n_inh)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not sigma_ee > 0:
            raise ValueError(f"sigma_ee must be > 0 (radians), got {sigma_ee!r}")
        if not (dt > 0 and tau_e > 0 and tau_i > 0):
            raise ValueError(f"dt, tau_e and tau_i must be > 0, got dt={dt!r}, tau_e={tau_e!r}, tau_i={tau_i!r}")
        self.n_exc, self.n_inh, self.sigma_ee, self.dt = n_exc, n_inh, float(sigma_ee), float(dt)
        self.alpha_e, self.alpha_i = min(dt / tau_e, 1.0), min(dt / tau_i, 1.0)
        self.noise_scale, self.landmark_strength, self.landmark_kappa = noise_scale, landmark_strength, landmark_kappa
        self.tonic_e, self.tonic_i, self.max_rate = tonic_e, tonic_i, max_rate

        theta = torch.arange(n_exc, dtype=torch.float32) * (2 * math.pi / n_exc)
        d = circular_distance(theta[:, None], theta[None, :])  # [post, pre]
        kernel = torch.exp(-d**2 / (2 * sigma_ee**2))
        norm = kernel.sum(1, keepdim=True)
        self.register_buffer("preferred", theta)
        self.register_buffer("W_EE", kernel / norm)  # each row sums to 1
        # Zhang's rotating component: the kernel's derivative. An input g_av * omega * tau_e *
        # dK/dtheta beside the recurrent g_ee * K shifts the bump by about g_av * omega * dt per
        # step, so g_av = 1 integrates angular velocity exactly (to first order); training tunes it.
        self.register_buffer("W_rot", tau_e * (d / sigma_ee**2) * kernel / norm)

        def p(v):
            return nn.Parameter(torch.tensor(float(v)))

        self.g_ee, self.g_ei, self.g_ie, self.g_av = p(g_ee), p(g_ei), p(g_ie), p(g_av)
        self.noise_rate_e, self.noise_rate_i = p(noise_rate_e), p(noise_rate_i)
        # E -> I, used as g_ei * W_EI @ r_E / n_exc; I -> E, used as g_ie * W_IE @ r_I / n_inh.
        # Heterogeneous at initialisation (uniform within +-weight_spread of 1 and -1): the
        # untrained ring has spots where the bump prefers to sit, and so drifts.
        s = float(weight_spread)
        self.W_EI = nn.Parameter(1.0 + s * (2 * torch.rand(n_inh, n_exc) - 1))
        self.W_IE = nn.Parameter(-1.0 - s * (2 * torch.rand(n_exc, n_inh) - 1))
        self.apply_constraints()

    # ------------------------------------------------------------------ constraints
    @torch.no_grad()
    def apply_constraints(self) -> None:
        """Clamp parameters into the seed's biological ranges (call after every optimizer step)."""
        for g in (self.g_ee, self.g_ei, self.g_ie):
            g.clamp_(*GAIN_RANGE)
        for r in (self.noise_rate_e, self.noise_rate_i):
            r.clamp_(*NOISE_RATE_RANGE)
        self.W_IE.clamp_(max=W_IE_MAX)
        self.W_EI.clamp_(*W_EI_RANGE)

    def constraint_violations(self) -> dict[str, int]:
        """Number of entries outside the biological ranges, per parameter (0 after a step)."""
        lo, hi = GAIN_RANGE
        nlo, nhi = NOISE_RATE_RANGE
        out = {n: int(((getattr(self, n) < lo) | (getattr(self, n) > hi)).sum()) for n in ("g_ee", "g_ei", "g_ie")}
        out.update({n: int(((getattr(self, n) < nlo) | (getattr(self, n) > nhi)).sum())
                    for n in ("noise_rate_e", "noise_rate_i")})
        out["W_IE"] = int((self.W_IE > W_IE_MAX).sum())
        out["W_EI"] = int(((self.W_EI < W_EI_RANGE[0]) | (self.W_EI > W_EI_RANGE[1])).sum())
        return out

    def ring_parameters(self) -> dict[str, float]:
        """The scalar parameters tracked every epoch (``param_history``)."""
        return {n: float(getattr(self, n).detach()) for n in ("g_ee", "g_ei", "g_ie", "g_av", "noise_rate_e", "noise_rate_i")}

    # ------------------------------------------------------------------ dynamics
    def recurrent_matrix(self) -> torch.Tensor:
        """[n_exc + n_inh, 2 n_exc + n_inh]: state @ M gives (input to E, input to I, rotation)."""
        ne, ni = self.n_exc, self.n_inh
        M = self.W_EE.new_zeros(ne + ni, 2 * ne + ni)
        top = torch.cat([self.g_ee * self.W_EE.T, self.g_ei * self.W_EI.T / ne, self.g_ee * self.g_av * self.W_rot.T], 1)
        bottom = torch.cat([self.g_ie * self.W_IE.T / ni, M.new_zeros(ni, ni + ne)], 1)
        return torch.cat([top, bottom], 0)

    def landmark_input(self, theta: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
        """Von Mises bump at the true direction ``theta`` [B, T] while ``light`` [B, T] is 1, in
        the recurrence's unit-major layout [T, n_exc, B]."""
        th, li = theta.t(), light.t()  # [T, B]
        bump = self.preferred[None, :, None] - th[:, None, :]
        gain = self.landmark_strength * li[:, None, :]  # [T, 1, B]
        if torch.is_grad_enabled():
            return gain * torch.exp(self.landmark_kappa * (torch.cos(bump) - 1.0))
        # without autograd, in place: the same operations on one [T, n_exc, B] buffer
        return bump.cos_().sub_(1.0).mul_(self.landmark_kappa).exp_().mul_(gain)

    def forward(self, omega: torch.Tensor, theta: torch.Tensor, light: torch.Tensor, noise: bool = True,
                generator: torch.Generator | None = None, state: torch.Tensor | None = None):
        """Run the network on angular velocity ``omega`` [B, T] (rad/s), with the landmark at
        ``theta`` [B, T] shown where ``light`` [B, T] is 1. Returns rates [B, T, n_exc + n_inh]
        (excitatory first) and the final membrane state [B, n_exc + n_inh]."""
        B, T = omega.shape
        ne, ni = self.n_exc, self.n_inh
        N = ne + ni
        M = self.recurrent_matrix()
        # Everything that does not depend on the state is computed for all steps at once, in
        # the recurrence's unit-major layout [T, N, B]: tonic drive, landmark, noise.
        land = self.landmark_input(theta, light)  # [T, ne, B]
        tonic = omega.new_tensor([self.tonic_e] * ne + [self.tonic_i] * ni)[:, None]
        # In place where no backward pass needs the overwritten values (the padded copy is ours):
        # the same numbers with fewer [T, N, B] buffers alive (the extraction's peak memory)
        ext = torch.nn.functional.pad(land, (0, 0, 0, ni))
        del land
        ext.add_(tonic)
        if noise:
            sd = self.noise_scale * torch.sqrt(torch.cat([self.noise_rate_e.expand(ne), self.noise_rate_i.expand(ni)]) / 10.0)
            z = torch.randn(T, N, B, generator=generator, device=omega.device, dtype=omega.dtype)
            ext.add_(sd[:, None] * z if torch.is_grad_enabled() else z.mul_(sd[:, None]))
            del z
        alpha = omega.new_tensor([self.alpha_e] * ne + [self.alpha_i] * ni)
        u0 = omega.new_zeros(B, N) if state is None else state
        rates, u = _Recurrence.apply(M, ext, omega.t().contiguous(), u0, alpha, ne)
        return rates.permute(2, 1, 0), u  # [B, T, N] as a view of the unit-major buffer

    def decode(self, rates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Population vector of the excitatory rates [..., n_exc(+n_inh)]: (direction in
        (-pi, pi], resultant length normalised by total activity)."""
        r = rates[..., : self.n_exc]
        cs = self.population_vector(rates)
        c, s = cs[..., 0], cs[..., 1]
        total = r.sum(-1).clamp_min(1e-8)
        return torch.atan2(s, c), torch.sqrt(c**2 + s**2) / total

    def population_vector(self, rates: torch.Tensor) -> torch.Tensor:
        """Sum of the excitatory rates times (cos, sin) of their preferred directions [..., 2]."""
        basis = torch.stack([torch.cos(self.preferred), torch.sin(self.preferred)])  # [2, n_exc]
        if rates.dim() == 3:  # [B, T, N], usually a view of the recurrence's [N, T, B] buffer:
            B, T, _ = rates.shape  # one product over all steps, without transposing the rates
            unit_major = rates.permute(2, 1, 0)[: self.n_exc].reshape(self.n_exc, T * B)
            return (basis @ unit_major).reshape(2, T, B).permute(2, 1, 0)
        return rates[..., : self.n_exc] @ basis.t()

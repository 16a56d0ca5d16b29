"""The optimizer and its schedule: airbench's Nesterov SGD with per-group learning rates and lookahead, and
a triangle (one-cycle) learning rate. Both are registered Keras objects, so checkpoints restore them."""

import keras
import tensorflow as tf

from job.config.parts import OptimConfig
from job.train.model import WHITEN


@keras.saving.register_keras_serializable(package="job")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from `start`*peak to `peak` over `warmup` of the steps, then linear decay to
    `end`*peak (airbench's triangle)."""

    def __init__(self, peak: float, total_steps: int, warmup: float = 0.23, start: float = 0.2, end: float = 0.07):
        self.peak, self.total_steps, self.warmup = float(peak), int(total_steps), float(warmup)
        self.start, self.end = float(start), float(end)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        total = float(max(self.total_steps, 1))
        up = max(self.warmup * total, 1.0)
        rising = self.start + (1.0 - self.start) * step / up
        falling = 1.0 + (self.end - 1.0) * tf.minimum((step - up) / max(total - up, 1.0), 1.0)
        return self.peak * tf.where(step < up, rising, falling)

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup": self.warmup,
            "start": self.start,
            "end": self.end,
        }


class _Untracked:
    """Holds the model's own variables out of Keras' attribute tracking (tracked, they would be saved as the
    optimizer's, and a loaded checkpoint's optimizer would no longer match)."""

    def __init__(self, items: list):
        self.items = items


@keras.saving.register_keras_serializable(package="job")
class BiasScaledSGD(keras.optimizers.SGD):
    """airbench's optimizer, in mean-loss units:
    - Nesterov SGD with an L2 penalty in the gradient (so it goes through momentum);
    - a larger learning rate for BatchNorm biases (`bias_lr_scale`, with the penalty divided by it so the
      decay per step stays the same);
    - fast_net's whitening layer: its kernel is never updated, its bias learns for the first
      `stem_bias_steps` steps only. The layer stays trainable in Keras' sense (its gradient is computed and
      dropped): freezing it to skip that gradient measured +3% images/s at width 64 with oneDNN on an AVX-512
      EPYC (298 vs 288, runs spread 281-312) and no clear gain on an AVX2 EPYC, within noise both times, so
      the toggling and its checkpoint bookkeeping were removed;
    - lookahead: every `lookahead_every` steps the weights are pulled to a slow average of themselves,
      slow <- slow + (1 - d) * (weights - slow); weights <- slow, with d = 0.95**k * (step / total_steps)**3
      (no averaging early, more towards the end); the last step always syncs, so training ends on the
      average. The slow copies are optimizer variables: checkpoints keep them. With `average_stats` the
      BatchNorm running statistics join the average (bind_statistics), as airbench does (it averages the whole
      state dict), so the final weights meet statistics averaged with them (--lookahead-bn-stats)."""

    def __init__(
        self,
        l2: float = 0.0,
        bias_lr_scale: float = 1.0,
        stem_bias_steps: int = 0,
        lookahead_every: int = 0,
        total_steps: int = 0,
        average_stats: bool = False,
        **kwargs,
    ):
        super().__init__(nesterov=kwargs.pop("nesterov", True), **kwargs)
        self.l2, self.bias_lr_scale = float(l2), float(bias_lr_scale)
        self.stem_bias_steps, self.lookahead_every, self.total_steps = (
            int(stem_bias_steps),
            int(lookahead_every),
            int(total_steps),
        )
        self.average_stats = bool(average_stats)
        if self.lookahead_every and self.total_steps < 1:
            raise ValueError("lookahead needs total_steps")

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.slow = self.add_optimizer_variables(variables, "slow") if self.lookahead_every else []
        # Slow copies of every BatchNorm layer's running mean and variance, shaped like its beta: created here,
        # from the trainable variables alone, so a checkpoint's optimizer state loads into a fresh optimizer.
        betas = (
            [v for v in variables if v.path.endswith("/beta")] if self.lookahead_every and self.average_stats else []
        )
        self.slow_means = self.add_optimizer_variables(betas, "slow_mean") if betas else []
        self.slow_vars = self.add_optimizer_variables(betas, "slow_var") if betas else []
        self._stat_layers = [v.path.rsplit("/", 1)[0] for v in betas]
        self._stats = _Untracked([])

    def bind_statistics(self, net: keras.Model) -> None:
        """Point the slow copies at `net`'s running statistics (after building, or after loading a checkpoint)."""
        if not getattr(self, "_stat_layers", None):
            return
        stats = {v.path: v for v in net.non_trainable_variables}
        self._stats = _Untracked(
            [
                (stats[f"{layer}/moving_mean"], mean, stats[f"{layer}/moving_variance"], var)
                for layer, mean, var in zip(self._stat_layers, self.slow_means, self.slow_vars, strict=True)
            ]
        )

    def apply(self, grads, trainable_variables=None):
        super().apply(grads, trainable_variables)
        # After the step (iterations now counts it): the statistics the forward pass just updated.
        for moving_mean, slow_mean, moving_var, slow_var in self._stats.items:
            self._lookahead(moving_mean, slow_mean, self.iterations)
            self._lookahead(moving_var, slow_var, self.iterations)

    def update_step(self, gradient, variable, learning_rate):
        # Keras hands the backend variable here; its Keras twin carries the layer path.
        index = self._get_variable_index(variable)
        path = self._trainable_variables[index].path
        if path == f"{WHITEN}/kernel":
            return
        if path == f"{WHITEN}/bias":
            tf.cond(
                self.iterations < self.stem_bias_steps,
                lambda: self._sgd_step(gradient, variable, learning_rate, 1.0),
                lambda: None,
            )
        else:
            self._sgd_step(gradient, variable, learning_rate, self.bias_lr_scale if path.endswith("/beta") else 1.0)
        if self.lookahead_every:
            self._lookahead(variable, self.slow[index], self.iterations + 1)

    def _sgd_step(self, gradient, variable, learning_rate, scale: float):
        if self.l2:
            gradient = gradient + tf.cast(self.l2 / scale, gradient.dtype) * tf.cast(variable, gradient.dtype)
        super().update_step(gradient, variable, tf.cast(learning_rate, tf.float32) * scale)

    def _lookahead(self, variable, slow, step):
        """`step`: this step, counted from 1."""
        k, total = self.lookahead_every, self.total_steps
        sync = tf.logical_or(tf.equal(step % k, 0), tf.equal(step, total))
        progress = tf.cast(step, tf.float32) / float(total)
        # At the first sync the slow copy is still unset: take the weights as they are.
        decay = tf.where(step <= k, 0.0, 0.95**k * progress**3)
        averaged = slow + (1.0 - decay) * (variable - slow)
        self.assign(slow, tf.where(sync, averaged, slow))
        self.assign(variable, tf.where(sync, averaged, variable))

    def get_config(self):
        return {
            **super().get_config(),
            "l2": self.l2,
            "bias_lr_scale": self.bias_lr_scale,
            "stem_bias_steps": self.stem_bias_steps,
            "lookahead_every": self.lookahead_every,
            "total_steps": self.total_steps,
            "average_stats": self.average_stats,
        }


def drops_last_batch(n: int, batch_size: int, drop_last: bool) -> bool:
    """A partial last batch is dropped (airbench does; `drop_last`) only when a full one exists."""
    return drop_last and n >= batch_size


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = False) -> int:
    if drops_last_batch(n, batch_size, drop_last):
        return n // batch_size
    return max(1, -(-n // batch_size))


def build_optimizer(optim: OptimConfig, train_images: int) -> keras.optimizers.Optimizer:
    """The seed recipe's Adam, or the fast recipe's BiasScaledSGD on a OneCycle schedule over the whole run."""
    if optim.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=optim.learning_rate, weight_decay=optim.weight_decay or None)
    per_epoch = steps_per_epoch(train_images, optim.batch_size, optim.drop_last)
    total = optim.epochs * per_epoch
    return BiasScaledSGD(
        learning_rate=OneCycle(optim.learning_rate, total),
        momentum=optim.momentum,
        l2=optim.weight_decay,
        bias_lr_scale=optim.bias_lr_scale,
        stem_bias_steps=optim.stem_bias_epochs * per_epoch,
        lookahead_every=optim.lookahead_every,
        total_steps=total,
        average_stats=optim.lookahead_bn_stats,  # airbench averages them too (docs/performance.md, screening)
    )

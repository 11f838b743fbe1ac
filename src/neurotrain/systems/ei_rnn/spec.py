"""E-I RNN: what the workflow needs to know about this system (torch-free)."""

from neurotrain.spec import Source, SystemSpec, conventional_stages

SPEC = SystemSpec(
    name="ei_rnn",
    title="Dale's-law E-I RNN fitted to PSTHs",
    seed="ei-rnn-final-training-plan.md",
    framework="torch",
    train_minutes=1,
    stages=conventional_stages(
        generate=("data",),
        preprocess=("data",),
        train=("data", "model", "loss", "training"),
        analyze=("analysis", "training.seed", "data.split_seed"),
        apply=("apply",),
    ),
    sources={"mat": Source(user_files=("path",))},
    captions={
        "training_curves": "E-I RNN training: loss terms and validation PSTH correlation per epoch.",
        "per_neuron_correlation_histogram": "E-I RNN: distribution of per-neuron PSTH correlations (model vs data, "
        "validation trials), excitatory and inhibitory separately, with the split-half noise ceiling.",
        "per_neuron_correlation_scatter": "E-I RNN: per-neuron correlation against each neuron's mean rate.",
        "best_worst_neurons": "E-I RNN: PSTHs of the best- and worst-fitted neurons, model against data, per condition.",
        "weight_matrices": "E-I RNN: recurrent, input and output weights; excitatory columns are non-negative and "
        "inhibitory ones non-positive (Dale's law).",
        "h0_distribution": "E-I RNN: learned initial state h0 of excitatory and inhibitory units.",
        "attention_patterns": "E-I RNN: attention weights of the input embedding per head.",
        "pca_trajectories": "E-I RNN: condition-averaged population trajectories on the data's top principal "
        "components, model against data.",
        "pca_state_space": "E-I RNN: state space of the top principal components and their explained variance.",
        "fano_factor_comparison": "E-I RNN: Fano factors of spike counts, model against data.",
    },
)

"""AlignRec at the reference settings, both stages, on the built-in synthetic data (no download).

Every dataset config imports this and overrides a few fields. Select with
`--config=configs/NAME.py`; override any field with e.g. `--config.optim.lr=5e-4`.

Groups: `data`, `model` (the stage-2 model: `name` picks one of the per-model groups below, each
holding that model's fields and its `loss` weights), `optim`, `train`, `eval`, `parallel`,
`pipeline` (what `launch.pipeline` trains stage 2 on), and `stage1` with the same groups for the
pre-training stage. A field that nothing reads is an error.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 999  # the reference's seed

  config.data = ml_collections.ConfigDict()
  # "synthetic" runs the built-in generator (written once under cache_dir, then loaded through
  # the MMRec loader); any other name loads the MMRec folder at `path`.
  config.data.name = "synthetic"
  config.data.path = ""
  config.data.inter_file = ""  # default: the folder's single *.inter file
  config.data.features = ("image_feat.npy", "text_feat.npy")  # feature files, in this order
  # Stage-2 input: each modality's rows L2-normalised, then concatenated (the spec). False gives
  # the raw concatenation that the authors' runs used.
  config.data.normalize_features = True
  config.data.synthetic_feature_dim = 0  # > 0: random features for graph-only datasets
  config.data.seed = 0  # seed of the synthetic data and features
  config.data.cache_dir = ""  # default: WORKDIR/data
  config.data.synthetic = ml_collections.ConfigDict(
    dict(
      num_users=2000,
      num_items=1000,
      mean_user_interactions=30,
      modality_dims=(("image_feat", 256), ("text_feat", 128)),
      seed=0,
    )
  )

  config.model = ml_collections.ConfigDict()
  config.model.name = "alignrec"  # one of the groups below
  config.model.kernel = "auto"  # sparse kernel: "auto", "csr" or "segment_sum"
  # The item kNN graphs (AlignRec, FREEDOM, MGCN): "exact", or "ivf" (faiss's approximate
  # inverted-file search, `knn_probes` lists a query; the `knn` extra) for catalogues where the
  # exact search's I^2 D work is too slow (graph.KnnSearch; recall in benchmarks/README.md).
  config.model.knn_search = "exact"
  config.model.knn_probes = 32
  config.model.alignrec = ml_collections.ConfigDict(
    dict(
      embed_dim=64,
      num_ui_layers=2,
      num_knn_layers=1,
      knn_k=10,
      knn_include_self=True,  # reference quirk: each item is its own first neighbour
      trainable_features=True,  # reference quirk: F is fine-tuned
      loss=dict(l2_weight=1e-4, uia_weight=0.1, cl_weight=0.01, sim_weight=0.1, temperature=0.2),
    )
  )
  # MMRec's baselines; reg_weight multiplies Frobenius norms of the batch's layer-0 rows. BPR-MF
  # (no graph, no content), VBPR (ID beside projected content; MMRec feeds it the raw,
  # unnormalised concatenation: data.normalize_features=False) and LightGCN.
  config.model.bpr = ml_collections.ConfigDict(dict(embed_dim=64, loss=dict(reg_weight=1e-4)))
  config.model.vbpr = ml_collections.ConfigDict(dict(embed_dim=64, loss=dict(reg_weight=1e-4)))
  config.model.lightgcn = ml_collections.ConfigDict(
    dict(embed_dim=64, num_ui_layers=2, loss=dict(reg_weight=1e-4))
  )
  # MMRec's BM3 (no negatives: a predictor head against dropped-out, gradient-stopped targets),
  # the first value of each of its lists; lr 1e-3 without decay (set optim.lr_decay=1.0).
  config.model.bm3 = ml_collections.ConfigDict(
    dict(
      embed_dim=64,
      num_ui_layers=1,
      trainable_features=True,
      loss=dict(dropout=0.3, reg_weight=0.1, cl_weight=2.0),
    )
  )
  # MMRec's FREEDOM, the first value of each of its lists: a frozen item graph mixing each
  # modality's binary kNN graph (the first feature file, MMRec's image slot, weighted
  # image_weight), the user-item graph pruned afresh every epoch (edge_dropout), reg_weight the
  # modalities' auxiliary BPR weight; lr 1e-3 without decay (set optim.lr_decay=1.0).
  config.model.freedom = ml_collections.ConfigDict(
    dict(
      embed_dim=64,
      num_ui_layers=2,
      num_mm_layers=1,
      knn_k=10,
      image_weight=0.1,
      edge_dropout=0.8,
      trainable_features=True,
      loss=dict(reg_weight=0.0),
    )
  )

  # MMRec's MGCN, the first value of each of its lists (cl_weight is its cl_loss): a gated
  # item-item view over each modality's frozen kNN graph fused with the user-item view; it keeps
  # the per-epoch lr decay (MMRec's MGCN sets 0.96 every 50 epochs, as the optim group does).
  config.model.mgcn = ml_collections.ConfigDict(
    dict(
      embed_dim=64,
      num_ui_layers=2,
      num_mm_layers=1,
      knn_k=10,
      trainable_features=True,
      loss=dict(reg_weight=1e-4, cl_weight=0.001, temperature=0.2),
    )
  )

  # Adam with the reference's per-epoch decay: lr * lr_decay ** (epoch / lr_decay_epochs).
  config.optim = ml_collections.ConfigDict(
    dict(
      name="adam",
      lr=1e-3,
      schedule="epoch_decay",
      lr_decay=0.96,
      lr_decay_epochs=50.0,
      warmup_epochs=0,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      weight_decay=0.0,
      clip_norm=0.0,
    )
  )

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 2048
  # The built-in demo's budget: it ends in under 5 minutes on 2 CPU cores. Every real dataset
  # config restores the reference's 1000 (early stopping usually ends runs long before).
  config.train.max_epochs = 100
  config.train.patience = 30  # stop on the 31st epoch in a row without a better validation score
  config.train.select_metric = "recall@20"
  # Checkpoint every this many epochs (and at the last one). 1 loses nothing on a kill; sweeps
  # of many short runs on an accelerator use more, since writing the state costs more than an
  # epoch there. A resumed run replays the epochs after its checkpoint identically.
  config.train.checkpoint_every = 1
  # Also write every number of each epoch's record to WORKDIR/tensorboard (tensorboardX, the
  # `tensorboard` extra): `tensorboard --logdir=WORKDIR`.
  config.train.tensorboard = False
  # The in-batch terms (InfoNCE, similarity preservation) span the whole batch (0, as the
  # reference computes them), or N equal slices of it: set N to the device count to keep each
  # device's terms on its own rows (no gathering of B x d rows across devices; each row then has
  # B / N - 1 in-batch negatives instead of B - 1). AlignRec and MGCN; benchmarks/README.md.
  config.train.in_batch_groups = 0

  # Devices the epochs run on: each step's batch is split across them (train.batch_size is the
  # global batch), parameters and data replicated (but see shard_tables); 0 takes every device
  # (training/parallel.py).
  # partition_graphs: on several devices, each propagates its share of the graphs' rows (the
  # propagation's work split N ways; False: every device propagates all of them).
  # shard_tables: stage 2's ID tables, fine-tuned feature table and their Adam moments split by
  # rows across the devices (each holds 1/N), not replicated; the same numbers. A run keeps
  # the setting it started with (it changes the checkpoint's shapes: training/parallel.py).
  config.parallel = ml_collections.ConfigDict(
    dict(num_devices=0, partition_graphs=True, shard_tables=False)
  )

  config.eval = ml_collections.ConfigDict()
  config.eval.ks = (5, 10, 20, 50)
  config.eval.chunk_size = 256  # users scored at once (benchmarks/README.md: fastest on CPU)
  config.eval.head_fraction = 0.2  # most popular 20% of items are "head"; the rest "tail"
  # The paper's cold-user analysis: metrics of the users with the shortest training histories
  # (this fraction of them), computed at each new best validation epoch ("valid_short",
  # "test_short" in the summary). 0 switches it off.
  config.eval.short_history_fraction = 0.2

  # launch.pipeline trains stage 2 on each candidate input and keeps the one with the best
  # validation train.select_metric: "stage1" (stage 1's features), "raw" (data.features combined)
  # or a stage-1 modality's paired raw file alone. `use` names one input to train and use instead.
  config.pipeline = ml_collections.ConfigDict(dict(candidates=("stage1", "raw"), use="best"))

  # Stage 1 (launch/pipeline.py): the cross-modal encoder pre-trained on the items' content; its
  # CLS vectors become stage 2's feature file. Sized for a 2-core CPU; see the accelerator configs
  # for the paper's scale.
  config.stage1 = ml_collections.ConfigDict()
  config.stage1.data = ml_collections.ConfigDict()
  # (name, kind, file): kind "sequence" (item text .tsv, MiniLM token states), "categorical"
  # (int .npy [I, L], -1 padding) or "vector" (float .npy [I, D]). See alignrec_jax/data/content.py.
  config.stage1.data.modalities = (
    ("image", "vector", "image_feat.npy"),
    ("text", "vector", "text_feat.npy"),
  )
  config.stage1.data.text_max_tokens = 64  # MiniLM truncation of item texts
  config.stage1.model = ml_collections.ConfigDict(
    dict(
      width=128,
      num_heads=4,
      num_layers=2,
      mlp_dim=0,  # 0: 4 x width
      output_dim=768,  # the CLS vector's size (BEiT-3 base: 768)
      vector_tokens=4,  # tokens a "vector" modality is projected into
      # The item features stage 2 reads: "cls" (the CLS vector, the paper's) or "anchored" (each
      # pretrained input's own vector beside it; models/encoder.py, benchmarks/README.md).
      output="cls",
    )
  )
  config.stage1.loss = ml_collections.ConfigDict(
    dict(
      mask_fraction=0.4,
      temperature=0.07,
      weights=dict(sequence=1.0, categorical=1.0, vector=1.0, contrastive=1.0, fused=1.0),
    )
  )
  # AdamW with linear warm-up then cosine decay to 0 over the run, gradients clipped.
  config.stage1.optim = ml_collections.ConfigDict(
    dict(
      name="adamw",
      lr=1e-3,
      schedule="warmup_cosine",
      lr_decay=1.0,
      lr_decay_epochs=1.0,
      warmup_epochs=2,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      weight_decay=0.05,
      clip_norm=1.0,
    )
  )
  config.stage1.train = ml_collections.ConfigDict(
    dict(batch_size=256, epochs=20, encode_batch_size=512, tensorboard=False)
  )
  return config

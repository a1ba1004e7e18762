"""ViT-B/16 ImageNet-1k classifiers with recursive signatures (paper App. E.2.2 and App. G).

The paper's setup: ViT-B/16 at 224 px with learned position embeddings, batch 1024, MixUp p=0.2, Adam (b2 0.95,
bfloat16 first moment), grad clip 1.0, lr 1e-3, wd 1e-4, cosine schedule with 10k warm-up steps, sigmoid
cross-entropy with the head bias initialised to -6.9.  The non-recursive baseline (A@224, signature AB = a plain
ViT) trains `epochs` epochs (300 or 1000); every other variant trains the number of epochs that gives the same
training FLOPs (siglip_rins.flops), e.g. the A@336 baseline (`res=336`) or (ABB)_2 (`signature=ABB,degree=2`).

  python -m siglip_rins.train --config configs/vit_rins.py:signature=ABB,degree=2 --workdir DIR
  python -m siglip_rins.train --config configs/vit_rins.py:res=336,epochs=1000 --workdir DIR      # A@336
  python -m siglip_rins.train --config configs/vit_rins.py:runlocal --workdir /tmp/vit             # seconds

Data: TFDS `imagenet2012`, prepared beforehand (nothing is downloaded at run time); training on the first 99% of
`train` (the last 1% is the small validation split used to tune lr).
Args: variant, signature, degree, p_skip, adapters, loop, remat, res, baseline_res, epochs (of the baseline),
batch_size, lr, runlocal, steps (runlocal baseline steps).  runlocal: the built-in shapes dataset as a
classification task (field `label`, siglip_rins.demo.shapes.NUM_CLASSES classes), a tiny ViT at 32 px.
"""

import ml_collections

try:
  from configs import common
except ImportError:  # loaded by path from elsewhere
  import importlib.util
  import os

  _spec = importlib.util.spec_from_file_location("configs.common", os.path.join(os.path.dirname(__file__), "common.py"))
  common = importlib.util.module_from_spec(_spec)
  _spec.loader.exec_module(common)

IMAGENET_TRAIN_SPLIT = "train[:99%]"
IMAGENET_TRAIN_EXAMPLES = 1_268_355  # examples in train[:99%] of imagenet2012 (1,281,167 in train)
IMAGENET_CLASSES = 1000
DEMO_TRAIN_EXAMPLES = 2048


def train_pp(res: int, num_classes: int, augment: bool = True) -> str:
  """Encoded image + int 'label' -> 'image' float32 [res, res, 3] in [-1, 1], 'labels' one-hot [num_classes]."""
  crop = f"inception_crop({res})|flip_lr" if augment else f"resize({res})"
  return (
    f'decode|{crop}|value_range(-1, 1)|onehot({num_classes}, key="label", key_result="labels")|keep("image", "labels")'
  )


def get_config(arg=None):
  a = common.parse_arg(
    arg,
    variant="B/16",
    signature="AB",
    degree=1,
    p_skip=0.0,
    adapters=False,
    loop="auto",
    remat=False,
    res=224,
    baseline_res=224,
    epochs=300.0,
    batch_size=1024,
    lr=1e-3,
    runlocal=False,
    steps=60,
  )
  num_classes, num_examples = IMAGENET_CLASSES, IMAGENET_TRAIN_EXAMPLES
  if a.runlocal:
    from siglip_rins.demo import shapes

    num_classes, num_examples = shapes.NUM_CLASSES, DEMO_TRAIN_EXAMPLES
    a.variant, a.res, a.baseline_res, a.batch_size = "mu/8", 32, 32, 32
    a.epochs = a.steps * a.batch_size / num_examples

  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = dict(name="classification", loss="sigmoid_xent")
  c.model = dict(
    name="classifier",
    variant=a.variant,
    num_classes=num_classes,
    pool_type="tok",
    posemb="learn",
    head_bias_init=-6.9,
    recursion=common.recursion(a),
    dtype="float32",
  )

  baseline_examples = a.epochs * num_examples
  # total_steps is derived from compute_match after every override (siglip_rins/budget.py).
  c.total_steps = None
  c.compute_match = dict(
    baseline_signature="AB", baseline_res=a.baseline_res, baseline_epochs=a.epochs, baseline_examples=baseline_examples
  )

  c.input = dict(
    batch_size=a.batch_size,
    image_size=a.res,
    num_examples=num_examples,
    shuffle_buffer_size=250_000,
    prefetch=2,
    cache="auto",  # the pp's deterministic prefix kept in host memory when it fits (data/pipeline.py)
    cache_max_bytes=1 << 30,
    pp=train_pp(a.res, num_classes),
  )
  c.input.data = dict(type="tfds", name="imagenet2012", split=IMAGENET_TRAIN_SPLIT)
  c.mixup = dict(p=0.2)

  c.lr, c.wd, c.grad_clip_norm = a.lr, a.lr / 10, 1.0
  c.adapter_lr_mult = "fan_in"  # linear adapters' kernels learn at lr / D (siglip_rins/optim.py)
  c.optax_name = "scale_by_adam"
  c.optax = dict(mu_dtype="bfloat16", b2=0.95)
  c.schedule = common.schedule("cosine", warmup_steps=10_000)
  c.log_every, c.ckpt_every, c.keep_ckpts = 100, 1000, 3
  c.max_bad_steps, c.tensorboard = 5, True
  c.mesh = dict(data=-1, fsdp=1)
  c.evals = {}

  if a.runlocal:
    c.input.data = dict(type="jsonl", path=common.demo_data_dir("train", DEMO_TRAIN_EXAMPLES, 32))
    c.input.shuffle_buffer_size = 1024
    c.input.pp = train_pp(a.res, num_classes, augment=False)
    c.schedule = common.schedule("cosine", warmup_steps=5)
    c.log_every, c.ckpt_every = 10, 0
  return c

"""attn-surgeon inside your own training code: the snippet of the documentation's "In your training code" page.

The lines between the ``snippet`` markers are those of ``docs/training.md``, verbatim
(``tests/test_training_snippet.py`` runs them and checks that both copies agree). Two names stand for what your
training repository already has: ``resnet18.pt``, your pretrained weights (a plain ``state_dict``), and
``train_loader``, your data loader.
"""
# ruff: noqa: F821  (train_loader is yours: the snippet uses it without defining it)

# snippet:training
import torch
import torchvision

import surgeon

# 1. Build your model as always, and patch it before loading weights or creating the optimizer.
model = torchvision.models.resnet18(num_classes=10)
surgeon.apply(model, "rules/eca_resnet.yaml")  # ECA in every residual unit, identity-initialised

# 2. Load your pretrained weights: every original key fits; only the new blocks' keys are missing.
state = torch.load("resnet18.pt", map_location="cpu", weights_only=True)
missing, unexpected = model.load_state_dict(state, strict=False)
assert not unexpected and all(".eca_residual." in key for key in missing)

# 3. Train as usual: the patched model is still a torchvision ResNet (DDP, AMP, torch.compile work unchanged).
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
model.train()
for images, labels in train_loader:
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

# 4. Save the weights with the recipe of the surgery (a state_dict: loads with weights_only=True).
surgeon.save(model, "resnet18_eca.pt", force=True)

# Resume, here or in another process: build, replay the surgery recorded in the file, load strictly.
model = torchvision.models.resnet18(num_classes=10)
surgeon.apply(model, "resnet18_eca.pt")
model.load_state_dict(torch.load("resnet18_eca.pt", weights_only=True), strict=True)
# /snippet

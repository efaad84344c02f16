"""Healthy: a Keras 3 MLP (torch backend) trained with model.fit. No alert should fire."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
from _common import args, blobs  # noqa: E402

a = args()
x, y = blobs()
model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(64, activation="relu"),
                          keras.layers.Dense(64, activation="relu"), keras.layers.Dense(4)])
model.compile(optimizer=keras.optimizers.Adam(1e-3),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
model.fit(x.numpy(), y.numpy(), batch_size=64, epochs=a.epochs, validation_split=0.2, verbose=2)

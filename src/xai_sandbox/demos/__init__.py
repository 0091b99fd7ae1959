"""Real models on real data, built offline: German credit (MLP and LightGBM) and a
pretrained EfficientNet-Lite0 on real photos."""

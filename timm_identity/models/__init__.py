"""The paper's all-convolutional residual networks (Section 4) as timm models."""

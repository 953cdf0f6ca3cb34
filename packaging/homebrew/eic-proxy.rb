# Homebrew formula template for eic-proxy.
#
# Fill in for a release: the sdist URL and sha256 from PyPI, then generate the resource blocks of the
# Python dependencies with `brew update-python-resources eic-proxy` (boto3, botocore, cryptography,
# websocket-client, wsaccel, keyring, platformdirs and their dependencies).
class EicProxy < Formula
  include Language::Python::Virtualenv

  desc "OpenSSH ProxyCommand for private EC2 instances through EC2 Instance Connect Endpoints"
  homepage "https://github.com/OWNER/eic-proxy"
  url "https://files.pythonhosted.org/packages/source/e/eic-proxy/eic_proxy-VERSION.tar.gz"
  sha256 "SHA256_OF_THE_SDIST"
  license "Apache-2.0"

  depends_on "cryptography"
  depends_on "python@3.12"

  # resource "boto3" do ... end   <- `brew update-python-resources eic-proxy`

  def install
    virtualenv_install_with_resources
    generate_completions_from_executable(bin/"eic-proxy", "completion", shells: [:bash, :zsh])
  end

  def caveats
    <<~EOS
      Route hosts through eic-proxy (writes ~/.ssh/eic-proxy.config and one Include line):
        eic-proxy ssh-config --install 'i-*' 'web-*' --user ec2-user
      The generated ProxyCommand names #{opt_bin}/eic-proxy, which survives upgrades.
    EOS
  end

  test do
    assert_match version.to_s, shell_output("#{bin}/eic-proxy --version")
    assert_match "ec2-instance-connect:OpenTunnel", shell_output("#{bin}/eic-proxy policy --os-user ec2-user")
    assert_match "_eic_proxy", shell_output("#{bin}/eic-proxy completion bash")
  end
end
